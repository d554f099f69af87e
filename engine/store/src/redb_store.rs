//! The embedded store on redb, with group commit.

use crate::overlay::{Batch, Layered, Recent};
use crate::paced::PacedFile;
use crate::tables::{Read, Table, Write};
use crate::wal::{self, Wal};
use crate::*;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::VecDeque;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

fn def(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

/// Jobs waiting for the writer at most; more wait in `submit` (back-pressure).
const QUEUE: usize = 4096;
/// Jobs in one commit at most.
const MAX_BATCH: usize = 512;

/// Called by the writer with a job's outcome, once its commit is durable.
type Reply = crate::Done;

pub struct RedbStore {
    db: Arc<Database>,
    pending: Arc<Pending>,
    writer: Arc<Writer>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The jobs waiting to be committed, and the log they are committed to.
/// Whoever holds `log` commits: the writer thread, for the jobs queued in
/// `inbox`, or a caller of [`RedbStore::submit_here`] that found the queue
/// empty and the log free, for its own job — one sequential client then
/// waits for its sync without two threads woken per command. Lock order:
/// `log`, then `inbox`; `inbox` is held only briefly (never while syncing).
struct Writer {
    inbox: Mutex<Inbox>,
    /// A job was queued, or the queue was closed.
    arrived: Condvar,
    /// The queue has room again.
    space: Condvar,
    log: Mutex<Option<Log>>,
    /// `log` is held (a hint for callers choosing where to commit).
    busy: AtomicBool,
    /// Jobs in the last commit. Past one, callers are arriving together:
    /// a caller then queues, so that it joins the next batch rather than
    /// making that batch wait for a sync of its own.
    last_batch: AtomicUsize,
    /// Jobs in the inbox (a hint, kept under its lock).
    queued: AtomicUsize,
    /// Tests: the writer takes nothing from the inbox while set.
    #[cfg(test)]
    held_back: AtomicBool,
}

#[derive(Default)]
struct Inbox {
    jobs: VecDeque<(Job, Reply)>,
    /// No more jobs are taken: the store closes, or its writer stopped.
    closed: bool,
}

/// The writer's state: the log, the checkpoint it last learned of, and why
/// it stopped (a failed log or applier: nothing more is acknowledged).
struct Log {
    wal: Wal,
    durable_through: u64,
    stopped: Option<String>,
}

/// `log` held; `busy` says so while the guard lives (cleared only after
/// the lock is released, so the hint never says idle while it is held).
struct Holding<'a> {
    guard: Option<MutexGuard<'a, Option<Log>>>,
    busy: &'a AtomicBool,
}

impl Holding<'_> {
    /// The log, unless the writer has ended (it took it).
    fn log(&mut self) -> Option<&mut Log> {
        self.guard.as_mut().and_then(|g| g.as_mut())
    }

    fn take(&mut self) -> Option<Log> {
        self.guard.as_mut().and_then(|g| g.take())
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.busy.store(false, Ordering::Release);
    }
}

impl Writer {
    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        // Nothing panics while holding it (replies run outside it).
        self.inbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A poisoned log (a panic while committing, on the writer's thread or
    /// a caller's) stops the store: what the log holds is then unknown.
    fn hold<'a>(&'a self, guard: std::sync::LockResult<MutexGuard<'a, Option<Log>>>) -> Holding<'a> {
        self.busy.store(true, Ordering::Release);
        let guard = guard.unwrap_or_else(|poisoned| {
            let mut guard = poisoned.into_inner();
            if let Some(log) = guard.as_mut()
                && log.stopped.is_none()
            {
                tracing::error!("the store stops writing: a commit panicked (restart the server: the log keeps every acknowledged write)");
                log.stopped = Some("a commit panicked".into());
            }
            guard
        });
        Holding { guard: Some(guard), busy: &self.busy }
    }

    fn log(&self) -> Holding<'_> {
        self.hold(self.log.lock())
    }

    fn try_log(&self) -> Option<Holding<'_>> {
        match self.log.try_lock() {
            Ok(guard) => Some(self.hold(Ok(guard))),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(self.hold(Err(p))),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// No more jobs are taken; those queued are answered `Closed`.
    fn close_inbox(&self) {
        let left: Vec<(Job, Reply)> = {
            let mut inbox = self.inbox();
            inbox.closed = true;
            self.queued.store(0, Ordering::Relaxed);
            inbox.jobs.drain(..).collect()
        };
        self.arrived.notify_all();
        self.space.notify_all();
        for (_, reply) in left {
            answer(reply, Err(StoreError::Closed));
        }
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The page cache of the store: `FLOWFORM_CACHE_MB` (default 32). The OS page
/// cache holds the rest of the file; this bounds the server's own memory
/// (redb's default, 1 GiB, filled up when repairing a large store after a crash).
/// At a million orders 32 MB serves pages, reports and the import as fast as
/// 128 MB did, and keeps the server under 300 MB (docs/performance.md).
pub const DEFAULT_CACHE_MB: usize = 32;

fn cache_bytes() -> usize {
    std::env::var("FLOWFORM_CACHE_MB").ok().and_then(|v| v.trim().parse::<usize>().ok()).filter(|mb| *mb > 0).unwrap_or(DEFAULT_CACHE_MB) << 20
}

impl RedbStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<RedbStore> {
        std::fs::create_dir_all(dir).map_err(|e| backend(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("flowform.redb");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| backend(format!("cannot open {}: {e}", path.display())))?;
        let file = PacedFile::new(file).map_err(|e| backend(format!("cannot open {}: {e}", path.display())))?;
        let db = match Database::builder().set_cache_size(cache_bytes()).create_with_backend(file) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Locked { path: path.display().to_string() }),
            Err(e) => return Err(backend(e)),
        };
        let db = Arc::new(db);
        let wal = recover(&db, &dir.join("wal"))?;
        let published_through = wal.next_seq().saturating_sub(1);
        let pending = Arc::new(Pending {
            state: Mutex::new(PendingState { published_through, taken_through: published_through, ..PendingState::default() }),
            changed: Condvar::new(),
            recent: Arc::default(),
        });
        let writer = Arc::new(Writer {
            inbox: Mutex::new(Inbox::default()),
            arrived: Condvar::new(),
            space: Condvar::new(),
            log: Mutex::new(Some(Log { wal, durable_through: 0, stopped: None })),
            busy: AtomicBool::new(false),
            last_batch: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            #[cfg(test)]
            held_back: AtomicBool::new(false),
        });
        let (writer_db, writer_pending, writer_shared) = (db.clone(), pending.clone(), writer.clone());
        let thread = std::thread::Builder::new()
            .name("flowform-writer".into())
            .spawn(move || writer_thread(writer_db, writer_pending, writer_shared))
            .map_err(backend)?;
        let store = RedbStore { db, pending, writer, thread: Mutex::new(Some(thread)) };
        // Through the writer thread: an open succeeds only with a writer that runs.
        store.submit_queued(Job::EnsureIndexes)?;
        Ok(store)
    }
}

#[cfg(test)]
impl RedbStore {
    /// Makes the applier's next copy into redb panic.
    pub(crate) fn panic_next_apply(&self) {
        self.pending.lock().panic_next_apply = true;
    }

    /// Holds the log as the writer does while it commits.
    pub(crate) fn hold_log(&self) -> impl Drop + '_ {
        self.writer.log()
    }

    /// While `on`, the writer takes nothing from its inbox.
    pub(crate) fn hold_back_writer(&self, on: bool) {
        self.writer.held_back.store(on, Ordering::Release);
        self.writer.arrived.notify_all();
    }

    /// Jobs waiting in the writer's queue.
    pub(crate) fn queued(&self) -> usize {
        self.writer.inbox().jobs.len()
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.stop_writer();
    }
}

impl RedbStore {
    /// Queues `job` for the writer thread and waits for its answer.
    fn submit_queued(&self, job: Job) -> Result<CommitOutcome> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.submit_then(
            job,
            Box::new(move |outcome| {
                let _ = reply.send(outcome);
            }),
        );
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    /// Closes the writer's queue and waits for it: its last checkpoint runs.
    fn stop_writer(&self) {
        {
            let mut inbox = self.writer.inbox();
            inbox.closed = true;
        }
        self.writer.arrived.notify_all();
        self.writer.space.notify_all();
        if let Ok(mut t) = self.thread.lock()
            && let Some(t) = t.take()
        {
            let _ = t.join();
        }
    }
}

/// The last log record the durable state of redb holds.
const WAL_APPLIED: &str = "wal_applied";

fn applied_seq(tx: &impl Read) -> Result<u64> {
    Ok(tx.get(Table::Meta, WAL_APPLIED)?.and_then(|v| String::from_utf8_lossy(&v).parse().ok()).unwrap_or(0))
}

/// Opens the write-ahead log and replays into redb the records its durable
/// state does not hold yet (a crash after their append), then checkpoints.
fn recover(db: &Database, dir: &Path) -> Result<Wal> {
    let tx = db.begin_write().map_err(backend)?;
    for t in Table::ALL {
        tx.open_table(def(t)).map_err(backend)?;
    }
    let applied = applied_seq(&WriteTx::new(&tx))?;
    let opened = Wal::open(dir, applied).map_err(|e| backend(format!("the write-ahead log in {}: {e}", dir.display())))?;
    if let Some(why) = &opened.stopped {
        tracing::warn!(reason = %why, "the write-ahead log ends in a torn record (a write the crash interrupted, never acknowledged)");
    }
    let mut replayed = 0;
    let last = opened.wal.next_seq() - 1;
    {
        let mut w = WriteTx::new(&tx);
        w.ops = None;
        for (expect, record) in (applied + 1..).zip(opened.records.iter().filter(|r| r.seq > applied)) {
            if record.seq != expect {
                return Err(StoreError::Corrupt {
                    what: format!("the write-ahead log in {}", dir.display()),
                    detail: format!("it goes on at record {} but the store holds up to {applied}: the log belongs to another copy of the store", record.seq),
                });
            }
            let ops = wal::decode(&record.payload).map_err(|e| StoreError::Corrupt { what: format!("write-ahead log record {}", record.seq), detail: e })?;
            for op in ops {
                match op {
                    wal::Op::Put(t, k, v) => w.put(t, k, v)?,
                    wal::Op::Delete(t, k) => w.delete(t, k)?,
                }
            }
            replayed += 1;
        }
        w.put(Table::Meta, WAL_APPLIED, last.to_string().as_bytes())?;
    }
    checkpoint_commit(tx)?;
    crate::metrics::metrics().checkpoints.inc();
    let mut wal = opened.wal;
    wal.checkpointed(last).map_err(backend)?;
    if replayed > 0 {
        tracing::info!(records = replayed, "replayed the write-ahead log after an unclean stop");
    }
    Ok(wal)
}

/// Commits with an fsync, saving redb's allocator state so that opening after
/// a crash does not rebuild it (quick repair).
fn checkpoint_commit(mut tx: redb::WriteTransaction) -> Result<()> {
    tx.set_durability(Durability::Immediate).map_err(backend)?;
    tx.set_quick_repair(true);
    tx.commit().map_err(backend)
}

/// A checkpoint at least this often while writes come, so that a restart
/// replays a few seconds of log at most and redb reuses freed pages.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a published batch waits for others to be applied with it, and
/// how many bytes of batches are applied at once without waiting.
const APPLY_AFTER: std::time::Duration = std::time::Duration::from_millis(2);
const APPLY_BYTES: usize = 4 << 20;

/// Published batches waiting for redb at most (bytes of their log records):
/// past it the writer waits for the applier before deciding the next batch.
const MAX_PENDING_BYTES: usize = 256 << 20;

/// What the writer and the applier share: the published batches (the
/// writes acknowledged but not yet in redb), under one lock with the
/// applier's state.
struct Pending {
    state: Mutex<PendingState>,
    changed: Condvar,
    /// The instances and counts published batches wrote (see [`Recent`]).
    recent: Arc<Recent>,
}

#[derive(Default)]
struct PendingState {
    /// Oldest first; a batch leaves only after redb committed it.
    batches: Vec<Arc<Batch>>,
    /// The newest batch ever published (the list may have none left).
    published_through: u64,
    /// The newest batch the applier has taken to copy into redb: no redb
    /// snapshot taken after this was read holds a newer one.
    taken_through: u64,
    bytes: usize,
    /// The writer asks for a checkpoint (a segment of the log fills up).
    checkpoint_wanted: bool,
    /// The last log record redb holds durably.
    durable_through: u64,
    /// The writer has stopped: the applier drains, checkpoints and ends.
    closing: bool,
    /// Why the applier stopped (redb refused a commit): nothing more is acknowledged.
    failed: Option<String>,
    /// Tests: the applier's next copy panics.
    #[cfg(test)]
    panic_next_apply: bool,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingState> {
        // Nothing panics while holding it; a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The published batches and a redb snapshot that holds none newer than
    /// they (see `overlay`). The snapshot is taken outside the lock (redb may
    /// make it wait for a commit); if the applier may have committed a batch
    /// published after the list was read, the list is read again. (Every
    /// commit the snapshot holds copied batches the applier had taken before
    /// it, so when the newest taken is no newer than the list, neither is the
    /// snapshot — known without reading redb's own record of it.)
    fn view(&self, db: &Database) -> Result<(Vec<Arc<Batch>>, RedbRead)> {
        loop {
            let (batches, published) = {
                let state = self.lock();
                (state.batches.clone(), state.published_through)
            };
            let mut base = RedbRead::new(db.begin_read().map_err(backend)?);
            if self.lock().taken_through <= published {
                debug_assert!(applied_seq(&base)? <= published, "a snapshot newer than the batches it is read with");
                base.recent = Some((self.recent.clone(), published));
                return Ok((batches, base));
            }
        }
    }
}

/// The writer thread: takes every queued job, decides them together over
/// the published batches and redb, appends the batch's writes to the log and
/// syncs it (one `fdatasync`), publishes the batch and answers each job —
/// redb is the applier's business. When a job fails (an error, or a panic,
/// which is caught) the batch is dropped; the jobs before it are decided
/// together again, the job fails alone, and the jobs after it go on as a
/// batch of their own; the thread goes on. When the queue closes (the store
/// is dropped) the applier drains and checkpoints, and the log goes.
fn writer_thread(db: Arc<Database>, pending: Arc<Pending>, writer: Arc<Writer>) {
    let applier_thread = {
        let (db, pending) = (db.clone(), pending.clone());
        std::thread::Builder::new().name("flowform-applier".into()).spawn(move || applier(&db, &pending))
    };
    let applier_thread = match applier_thread {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the store's applier thread; the store does not write");
            writer.close_inbox();
            return;
        }
    };
    let _finish = FinishOnExit(&pending);
    let _close = CloseOnExit(&writer);
    loop {
        // Idle, it still wakes now and then to drop segments a checkpoint covers.
        {
            let mut inbox = writer.inbox();
            if inbox.jobs.is_empty() && !inbox.closed {
                inbox = writer.arrived.wait_timeout(inbox, CHECKPOINT_EVERY).unwrap_or_else(std::sync::PoisonError::into_inner).0;
            }
            #[cfg(test)]
            while writer.held_back.load(Ordering::Acquire) && !inbox.closed {
                inbox = writer.arrived.wait_timeout(inbox, std::time::Duration::from_millis(1)).unwrap_or_else(std::sync::PoisonError::into_inner).0;
            }
            if inbox.jobs.is_empty() && inbox.closed {
                break;
            }
        }
        let mut held = writer.log();
        let Some(log) = held.log() else { break };
        if log.stopped.is_some() {
            break;
        }
        let batch: Vec<(Job, Reply)> = {
            let mut inbox = writer.inbox();
            let n = inbox.jobs.len().min(MAX_BATCH);
            let batch = inbox.jobs.drain(..n).collect();
            writer.queued.store(inbox.jobs.len(), Ordering::Relaxed);
            batch
        };
        writer.space.notify_all();
        let jobs: Vec<&Job> = batch.iter().map(|(j, _)| j).collect();
        if !jobs.is_empty() {
            writer.last_batch.store(jobs.len(), Ordering::Relaxed);
        }
        let outcomes = commit_jobs(&db, &pending, &mut log.wal, &jobs);
        for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
            answer(reply, outcome);
        }
        if after_batch(&pending, log) {
            break;
        }
    }
    // Later jobs are refused; the applier takes what is published into redb
    // and checkpoints; then the log is no longer needed.
    writer.close_inbox();
    let log = writer.log().take();
    pending.lock().closing = true;
    pending.changed.notify_all();
    let drained = applier_thread.join().unwrap_or_else(|_| Err(backend("the store's applier thread panicked")));
    let Some(log) = log else { return };
    match drained {
        Ok(()) if log.wal.broken().is_none() => {
            if let Err(e) = log.wal.close() {
                tracing::warn!(error = %e, "the write-ahead log could not be removed after the last checkpoint");
            }
        }
        Ok(()) => {}
        Err(e) => tracing::error!(error = %e, "the last checkpoint failed; the log is replayed at the next start"),
    }
}

/// However the writer thread ends (a panic too), nothing more is committed:
/// callers are answered `Closed` instead of waiting for a thread that is gone.
struct CloseOnExit<'a>(&'a Writer);

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        if let Some(log) = self.0.log().log()
            && log.stopped.is_none()
        {
            log.stopped = Some("the store's writer thread ended".into());
        }
        self.0.close_inbox();
    }
}

/// Commits `jobs` (one batch, or several when one fails): one outcome each.
fn commit_jobs(db: &Database, pending: &Pending, wal: &mut Wal, jobs: &[&Job]) -> Vec<Result<CommitOutcome>> {
    let mut outcomes: Vec<Result<CommitOutcome>> = Vec::with_capacity(jobs.len());
    while outcomes.len() < jobs.len() {
        let rest = &jobs[outcomes.len()..];
        match commit_batch(db, pending, wal, rest) {
            Ok(done) => outcomes.extend(done.into_iter().map(Ok)),
            // The job at `failed` fails alone; those before it are decided again without it.
            Err((failed, e)) => {
                if failed > 0 {
                    match commit_batch(db, pending, wal, &rest[..failed]) {
                        Ok(done) => outcomes.extend(done.into_iter().map(Ok)),
                        // The disk itself fails: nothing of these is acknowledged.
                        Err((_, e2)) => outcomes.extend((0..failed).map(|_| Err(backend(&e2)))),
                    }
                }
                tracing::warn!(error = %e, "a store job failed; the others of its batch go on");
                outcomes.push(Err(e));
            }
        }
    }
    outcomes
}

/// Gives a job its outcome; a caller's callback that panics must not take
/// the writer down.
fn answer(reply: Reply, outcome: Result<CommitOutcome>) {
    if let Err(e) = &outcome {
        tracing::error!(error = %e, "a store job failed");
    }
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reply(outcome))).is_err() {
        tracing::error!("a store job's reply panicked");
    }
}

/// After a batch's answers: old segments go once redb holds them durably,
/// and a filling segment asks the applier for a checkpoint. `true`: the
/// store stops writing (its log or the applier failed; `log.stopped` says why).
fn after_batch(pending: &Pending, log: &mut Log) -> bool {
    if let Some(why) = log.wal.broken() {
        // `/healthz` shows the writer down; every later job is refused.
        tracing::error!(reason = %why, "the store stops writing: its log failed");
        log.stopped = Some(why.to_string());
        return true;
    }
    let (through, failed) = {
        let state = pending.lock();
        (state.durable_through, state.failed.clone())
    };
    if let Some(why) = failed {
        tracing::error!(reason = %why, "the store stops writing: redb refused the acknowledged writes (the log keeps them; restart the server)");
        log.stopped = Some(why);
        return true;
    }
    if through > log.durable_through {
        log.durable_through = through;
        if let Err(e) = log.wal.checkpointed(through) {
            tracing::warn!(error = %e, "old segments of the write-ahead log could not be removed");
        }
    }
    if log.wal.wants_checkpoint() {
        pending.lock().checkpoint_wanted = true;
        pending.changed.notify_all();
    }
    false
}

/// Tells the applier to drain and end when the writer ends — also when the
/// writer panics, so the applier never outlives it holding the database.
struct FinishOnExit<'a>(&'a Pending);

impl Drop for FinishOnExit<'_> {
    fn drop(&mut self) {
        self.0.lock().closing = true;
        self.0.changed.notify_all();
    }
}

/// The applier thread: copies published batches into redb (all that wait,
/// in one transaction without a sync, with the last record's number in
/// `meta/wal_applied`), then takes them off the list; checkpoints (an empty
/// durable transaction) every 5 s while writes come, when the writer asks,
/// and before it ends. A failure stops it: the writer then acknowledges
/// nothing more, and a restart replays the log.
fn applier(db: &Database, pending: &Pending) -> Result<()> {
    crate::paced::pace_this_thread();
    // A panic (a bug, or redb's) stops it like an error does: the writer must
    // learn of it, or it would go on publishing and wait forever at the bound.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply_loop(db, pending)))
        .unwrap_or_else(|panic| Err(backend(format!("the applier panicked: {}", panic_message(&panic)))));
    if let Err(e) = &result {
        tracing::error!(error = %e, "the store's applier stopped; the store stops writing (restart the server: the log keeps every acknowledged write)");
        pending.lock().failed = Some(e.to_string());
        pending.changed.notify_all();
    }
    result
}

fn apply_loop(db: &Database, pending: &Pending) -> Result<()> {
    let mut last_checkpoint = std::time::Instant::now();
    let mut applied = None;
    loop {
        let (take, closing, wanted) = {
            let mut state = pending.lock();
            loop {
                let due = applied.is_some() && (state.checkpoint_wanted || last_checkpoint.elapsed() >= CHECKPOINT_EVERY);
                // Batches wait a little to be applied together: one redb
                // transaction for many copies each B-tree page once.
                let oldest = state.batches.first().map(|b| b.published.elapsed());
                let ripe = oldest.is_some_and(|age| age >= APPLY_AFTER || state.bytes >= APPLY_BYTES);
                if ripe || state.closing || due {
                    break;
                }
                let mut wait = if applied.is_some() { CHECKPOINT_EVERY.saturating_sub(last_checkpoint.elapsed()) } else { CHECKPOINT_EVERY };
                if let Some(age) = oldest {
                    wait = wait.min(APPLY_AFTER.saturating_sub(age));
                }
                state = pending.changed.wait_timeout(state, wait).unwrap_or_else(std::sync::PoisonError::into_inner).0;
            }
            if let Some(last) = state.batches.last() {
                state.taken_through = state.taken_through.max(last.seq);
            }
            (state.batches.clone(), state.closing, state.checkpoint_wanted)
        };
        if let Some(last) = take.last() {
            #[cfg(test)]
            if pending.lock().panic_next_apply {
                panic!("a panic the test asked for");
            }
            apply_batches(db, &take)?;
            let mut state = pending.lock();
            state.batches.drain(..take.len());
            state.bytes = state.batches.iter().map(|b| b.bytes).sum();
            drop(state);
            pending.changed.notify_all();
            applied = Some(last.seq);
        }
        let idle = take.is_empty();
        if let Some(through) = applied
            && (wanted || last_checkpoint.elapsed() >= CHECKPOINT_EVERY || (closing && idle))
        {
            checkpoint(db)?;
            let mut state = pending.lock();
            state.durable_through = through;
            state.checkpoint_wanted = false;
            drop(state);
            (applied, last_checkpoint) = (None, std::time::Instant::now());
        }
        if closing && idle && applied.is_none() {
            return Ok(());
        }
    }
}

/// Writes published batches into redb in one transaction without a sync:
/// each key's last write over them (`overlay::last_writes`).
fn apply_batches(db: &Database, batches: &[Arc<Batch>]) -> Result<()> {
    let mut tx = db.begin_write().map_err(backend)?;
    tx.set_durability(Durability::None).map_err(backend)?;
    {
        let mut w = WriteTx::new(&tx);
        w.ops = None;
        for (table, key, value) in crate::overlay::last_writes(batches) {
            match value {
                Some(value) => w.put(table, key, value)?,
                None => w.delete(table, key)?,
            }
        }
        if let Some(last) = batches.last() {
            w.put(Table::Meta, WAL_APPLIED, last.seq.to_string().as_bytes())?;
        }
    }
    tx.commit().map_err(backend)?;
    crate::metrics::metrics().applied_batches.observe(batches.len() as f64);
    Ok(())
}

/// A checkpoint: syncs redb with everything committed so far.
fn checkpoint(db: &Database) -> Result<()> {
    let tx = db.begin_write().map_err(backend)?;
    checkpoint_commit(tx)?;
    crate::metrics::metrics().checkpoints.inc();
    Ok(())
}

/// The tables of one write transaction, each opened once (opening a table is
/// not free, and a command touches several tables many times).
struct WriteTx<'t> {
    tx: &'t redb::WriteTransaction,
    open: std::cell::RefCell<std::collections::HashMap<Table, redb::Table<'t, &'static str, &'static [u8]>>>,
    /// Every write, in order, for the write-ahead log (`None`: not logged).
    ops: Option<wal::Ops>,
}

impl<'t> WriteTx<'t> {
    fn new(tx: &'t redb::WriteTransaction) -> Self {
        WriteTx { tx, open: std::cell::RefCell::new(std::collections::HashMap::new()), ops: Some(wal::Ops::default()) }
    }

    /// Runs `f` on the open table. `f` must not use this transaction again
    /// (the logic's range callbacks only decode).
    fn with<R>(&self, table: Table, f: impl FnOnce(&mut redb::Table<'t, &'static str, &'static [u8]>) -> Result<R>) -> Result<R> {
        let mut open = self.open.try_borrow_mut().map_err(|_| backend("table used re-entrantly"))?;
        let t = match open.entry(table) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(self.tx.open_table(def(table)).map_err(backend)?),
        };
        f(t)
    }
}

fn range_table<T: ReadableTable<&'static str, &'static [u8]>>(
    table: &T,
    lo: Bound<&str>,
    hi: Bound<&str>,
    reverse: bool,
    f: &mut dyn FnMut(&str, &[u8]) -> Result<bool>,
) -> Result<()> {
    let range = table.range::<&str>((lo, hi)).map_err(backend)?;
    let mut visit = |entry: std::result::Result<(redb::AccessGuard<&str>, redb::AccessGuard<&[u8]>), redb::StorageError>| -> Result<bool> {
        let (k, v) = entry.map_err(backend)?;
        f(k.value(), v.value())
    };
    if reverse {
        for entry in range.rev() {
            if !visit(entry)? {
                break;
            }
        }
    } else {
        for entry in range {
            if !visit(entry)? {
                break;
            }
        }
    }
    Ok(())
}

impl Read for WriteTx<'_> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>> {
        self.with(table, |t| Ok(t.get(key).map_err(backend)?.map(|v| v.value().to_vec())))
    }
    fn range(&self, table: Table, lo: Bound<&str>, hi: Bound<&str>, reverse: bool, f: &mut dyn FnMut(&str, &[u8]) -> Result<bool>) -> Result<()> {
        self.with(table, |t| range_table(t, lo, hi, reverse, f))
    }
}

impl Write for WriteTx<'_> {
    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<()> {
        if let Some(ops) = &mut self.ops {
            ops.put(table, key, value);
        }
        self.with(table, |t| {
            t.insert(key, value).map_err(backend)?;
            Ok(())
        })
    }
    fn delete(&mut self, table: Table, key: &str) -> Result<()> {
        if let Some(ops) = &mut self.ops {
            ops.delete(table, key);
        }
        self.with(table, |t| {
            t.remove(key).map_err(backend)?;
            Ok(())
        })
    }
}

/// A redb snapshot; each table opened once.
struct RedbRead {
    tx: redb::ReadTransaction,
    open: std::cell::RefCell<std::collections::HashMap<Table, redb::ReadOnlyTable<&'static str, &'static [u8]>>>,
    /// In a view of the store as of a batch: the instances and counts
    /// written lately, and that batch's number (see [`Recent`]).
    recent: Option<(Arc<Recent>, u64)>,
}

impl RedbRead {
    fn new(tx: redb::ReadTransaction) -> Self {
        RedbRead { tx, open: std::cell::RefCell::new(std::collections::HashMap::new()), recent: None }
    }

    /// Runs `f` on the table, opened once and kept; a range's callback may
    /// read again, so a table opened while another borrow runs is not kept.
    fn with<R>(&self, table: Table, f: impl FnOnce(&redb::ReadOnlyTable<&'static str, &'static [u8]>) -> Result<R>) -> Result<R> {
        if let Ok(open) = self.open.try_borrow()
            && let Some(t) = open.get(&table)
        {
            return f(t);
        }
        let t = self.tx.open_table(def(table)).map_err(backend)?;
        match self.open.try_borrow_mut() {
            Ok(mut open) => {
                open.insert(table, t);
                drop(open);
                let open = self.open.try_borrow().map_err(|_| backend("table used re-entrantly"))?;
                match open.get(&table) {
                    Some(t) => f(t),
                    None => Err(backend("table not open")),
                }
            }
            Err(_) => f(&t),
        }
    }
}

impl Read for RedbRead {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>> {
        if let Some((recent, through)) = &self.recent
            && let Some(value) = recent.value(table, key, *through)
        {
            return Ok(value);
        }
        self.with(table, |t| Ok(t.get(key).map_err(backend)?.map(|v| v.value().to_vec())))
    }
    fn read_instance(&self, id: &str) -> Result<Option<Arc<Instance>>> {
        if let Some((recent, through)) = &self.recent
            && let Some(instance) = recent.get(id, *through)
        {
            return Ok(Some(instance));
        }
        self.get(Table::Instances, id)?.map(|b| codec::decode_instance(id, &b).map(Arc::new)).transpose()
    }
    fn range(&self, table: Table, lo: Bound<&str>, hi: Bound<&str>, reverse: bool, f: &mut dyn FnMut(&str, &[u8]) -> Result<bool>) -> Result<()> {
        self.with(table, |t| range_table(t, lo, hi, reverse, f))
    }
}

/// The writes of a batch being decided, over the published batches and a
/// redb snapshot, recorded for the log as they are made.
struct BatchTx<'a> {
    layers: &'a [Arc<Batch>],
    base: &'a RedbRead,
    own: Batch,
    ops: wal::Ops,
}

impl BatchTx<'_> {
    fn layered(&self) -> Layered<'_> {
        Layered { layers: self.layers, own: Some(&self.own), base: self.base }
    }
}

impl Read for BatchTx<'_> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>> {
        self.layered().get(table, key)
    }
    fn read_instance(&self, id: &str) -> Result<Option<Arc<Instance>>> {
        self.layered().read_instance(id)
    }
    fn range(&self, table: Table, lo: Bound<&str>, hi: Bound<&str>, reverse: bool, f: &mut dyn FnMut(&str, &[u8]) -> Result<bool>) -> Result<()> {
        self.layered().range(table, lo, hi, reverse, f)
    }
}

impl Write for BatchTx<'_> {
    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<()> {
        self.ops.put(table, key, value);
        self.own.put(table, key, value);
        Ok(())
    }
    fn delete(&mut self, table: Table, key: &str) -> Result<()> {
        self.ops.delete(table, key);
        self.own.delete(table, key);
        Ok(())
    }
    fn write_instance(&mut self, instance: &Arc<Instance>) -> Result<()> {
        let encoded = codec::encode_instance(instance)?;
        self.ops.put(Table::Instances, &instance.id, &encoded);
        self.own.put_instance(instance, &encoded);
        Ok(())
    }
}

/// Decides `batch` over the published batches and redb, appends its writes
/// to the log (one sync) and publishes them. `Err((i, e))`: job `i` failed
/// (nothing was written); a failing append blames the last job.
fn commit_batch(db: &Database, pending: &Pending, wal: &mut Wal, batch: &[&Job]) -> std::result::Result<Vec<CommitOutcome>, (usize, StoreError)> {
    let last = batch.len().saturating_sub(1);
    if let Some(why) = wal.broken() {
        return Err((0, backend(format!("the store stopped writing after a failed write to its log ({why}); restart the server"))));
    }
    // Back-pressure: redb far behind (a slow disk) holds the next batch back.
    {
        let mut state = pending.lock();
        while state.bytes > MAX_PENDING_BYTES && state.failed.is_none() {
            state = pending.changed.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if let Some(why) = &state.failed {
            return Err((0, backend(format!("the store stopped writing: {why}; restart the server"))));
        }
    }
    let (layers, base) = pending.view(db).map_err(|e| (0, e))?;
    let seq = wal.next_seq();
    let mut w = BatchTx { layers: &layers, base: &base, own: Batch::new(seq), ops: wal::Ops::default() };
    let mut outcomes = Vec::with_capacity(batch.len());
    for (i, job) in batch.iter().enumerate() {
        // A bug in a job's logic must not take the writer thread down with it.
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| logic::apply(&mut w, job)))
            .unwrap_or_else(|panic| Err(backend(format!("a store job panicked: {}", panic_message(&panic)))));
        outcomes.push(applied.map_err(|e| (i, e))?);
    }
    let BatchTx { mut own, ops, .. } = w;
    if ops.is_empty() {
        return Ok(outcomes);
    }
    // Acknowledged means in the log and synced; redb follows in the background.
    let started = std::time::Instant::now();
    wal.append(seq, &ops).map_err(|e| (last, backend(format!("cannot write the store's log: {e}"))))?;
    crate::metrics::metrics().sync_seconds.observe(started.elapsed().as_secs_f64());
    own.bytes = ops.len_bytes() + own.kept_bytes;
    own.published = std::time::Instant::now();
    let (wake, _evicted) = {
        let mut state = pending.lock();
        // A list that held batches already has the applier waiting for the
        // oldest to ripen (or applying): it needs no wake-up for this one.
        let wake = state.batches.is_empty() || state.bytes < APPLY_BYTES && state.bytes + own.bytes >= APPLY_BYTES;
        state.bytes += own.bytes;
        // Recorded before it is published: a view that holds it finds its
        // instances there after the applier took it (see `Recent`).
        let evicted = pending.recent.published(&own);
        state.published_through = own.seq;
        state.batches.push(Arc::new(own));
        (wake, evicted)
    };
    if wake {
        pending.changed.notify_all();
    }
    crate::metrics::metrics().batch_jobs.observe(batch.len() as f64);
    Ok(outcomes)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown".into())
}

impl Store for RedbStore {
    fn healthy(&self) -> bool {
        self.thread.lock().is_ok_and(|t| t.as_ref().is_some_and(|t| !t.is_finished())) && self.pending.lock().failed.is_none()
    }

    fn close(&self) {
        self.stop_writer();
    }

    fn submit(&self, job: Job) -> Result<CommitOutcome> {
        match self.submit_here(job) {
            Here::Done(outcome) => outcome,
            Here::Queue(job) => self.submit_queued(job),
        }
    }

    fn submit_then(&self, job: Job, done: crate::Done) {
        let mut inbox = self.writer.inbox();
        // Blocks only while the writer's queue is full (back-pressure).
        while inbox.jobs.len() >= QUEUE && !inbox.closed {
            inbox = self.writer.space.wait(inbox).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if inbox.closed {
            drop(inbox);
            return done(Err(StoreError::Closed));
        }
        inbox.jobs.push_back((job, done));
        self.writer.queued.store(inbox.jobs.len(), Ordering::Relaxed);
        drop(inbox);
        self.writer.arrived.notify_one();
    }

    fn writer_idle(&self) -> bool {
        !self.writer.busy.load(Ordering::Acquire) && self.writer.queued.load(Ordering::Relaxed) == 0 && self.writer.last_batch.load(Ordering::Relaxed) <= 1
    }

    fn submit_here(&self, job: Job) -> Here {
        // Only when nothing is queued (a job queued earlier must not be
        // overtaken) and the log is free; the inbox is held until the log is,
        // so the writer cannot take a job queued meanwhile first. Not while
        // callers come together (the last commit was a batch): then the job
        // joins the next batch.
        let mut held = {
            let inbox = self.writer.inbox();
            if inbox.closed || !inbox.jobs.is_empty() || self.writer.last_batch.load(Ordering::Relaxed) > 1 {
                return Here::Queue(job);
            }
            match self.writer.try_log() {
                Some(held) => held,
                None => return Here::Queue(job),
            }
        };
        let Some(log) = held.log() else { return Here::Queue(job) };
        if log.stopped.is_some() {
            return Here::Queue(job);
        }
        let outcome = commit_jobs(&self.db, &self.pending, &mut log.wal, &[&job]).pop().unwrap_or(Err(StoreError::Closed));
        crate::metrics::metrics().commits_here.inc();
        self.writer.last_batch.store(1, Ordering::Relaxed);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "a store job failed");
        }
        if after_batch(&self.pending, log) {
            // The writer thread stops too (and refuses what is queued); the
            // inbox's lock is taken so that the wake-up cannot fall between
            // its check and its wait.
            drop(held);
            let _inbox = self.writer.inbox();
            self.writer.arrived.notify_all();
        }
        Here::Done(outcome)
    }

    fn read(&self, f: &mut dyn FnMut(&dyn Read) -> Result<()>) -> Result<()> {
        let (layers, base) = self.pending.view(&self.db)?;
        f(&Layered { layers: &layers, own: None, base: &base })
    }
}
