//! The embedded store on redb, with group commit.

use crate::tables::{Read, Table, Write};
use crate::wal::{self, Wal};
use crate::*;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::ops::Bound;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
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
    writer: Mutex<Option<SyncSender<(Job, Reply)>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
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
        let db = match Database::builder().set_cache_size(cache_bytes()).create(&path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Locked { path: path.display().to_string() }),
            Err(e) => return Err(backend(e)),
        };
        let db = Arc::new(db);
        let wal = recover(&db, &dir.join("wal"))?;
        let (tx, rx) = sync_channel(QUEUE);
        let writer_db = db.clone();
        let thread = std::thread::Builder::new().name("flowform-writer".into()).spawn(move || writer(writer_db, wal, rx)).map_err(backend)?;
        let store = RedbStore { db, writer: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) };
        store.submit(Job::EnsureIndexes)?;
        Ok(store)
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.stop_writer();
    }
}

impl RedbStore {
    /// Closes the writer's queue and waits for it: its last checkpoint runs.
    fn stop_writer(&self) {
        if let Ok(mut w) = self.writer.lock() {
            w.take();
        }
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
        let last = opened.wal.next_seq() - 1;
        w.put(Table::Meta, WAL_APPLIED, last.to_string().as_bytes())?;
    }
    checkpoint_commit(tx)?;
    crate::metrics::metrics().checkpoints.inc();
    let mut wal = opened.wal;
    wal.checkpointed().map_err(backend)?;
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

/// The writer thread: takes every queued job, applies them in one write
/// transaction, appends its writes to the log and syncs it (one
/// `fdatasync`), commits redb without a sync, then answers each. When a job
/// fails (an error, or a panic, which is caught) the batch is rolled back;
/// the jobs before it commit together again, the job fails alone, and the
/// jobs after it go on as a batch of their own — one extra commit per
/// failing job; the thread goes on. When the channel closes (the store is
/// dropped) a last checkpoint leaves no log behind.
fn writer(db: Arc<Database>, mut wal: Wal, rx: Receiver<(Job, Reply)>) {
    let mut last_checkpoint = std::time::Instant::now();
    let mut dirty = false;
    loop {
        let first = match rx.recv_timeout(CHECKPOINT_EVERY) {
            Ok(job) => job,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if dirty {
                    match idle_checkpoint(&db, &mut wal) {
                        Ok(()) => (dirty, last_checkpoint) = (false, std::time::Instant::now()),
                        Err(e) => {
                            // The log keeps every write; redb must be opened again.
                            tracing::error!(error = %e, "a checkpoint of the store failed; the store stops writing (restart the server)");
                            return;
                        }
                    }
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let jobs: Vec<&Job> = batch.iter().map(|(j, _)| j).collect();
        let mut outcomes: Vec<Result<CommitOutcome>> = Vec::with_capacity(jobs.len());
        while outcomes.len() < jobs.len() {
            let rest = &jobs[outcomes.len()..];
            match commit_batch(&db, &mut wal, rest) {
                Ok(done) => {
                    outcomes.extend(done.into_iter().map(Ok));
                    dirty = true;
                }
                // The job at `failed` fails alone; those before it commit again without it.
                Err((failed, e)) => {
                    if failed > 0 {
                        match commit_batch(&db, &mut wal, &rest[..failed]) {
                            Ok(done) => {
                                outcomes.extend(done.into_iter().map(Ok));
                                dirty = true;
                            }
                            // The disk itself fails: nothing of these is acknowledged.
                            Err((_, e2)) => outcomes.extend((0..failed).map(|_| Err(backend(&e2)))),
                        }
                    }
                    tracing::warn!(error = %e, "a store job failed; the others of its batch go on");
                    outcomes.push(Err(e));
                }
            }
        }
        for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
            if let Err(e) = &outcome {
                tracing::error!(error = %e, "a store job failed");
            }
            // A caller's callback that panics must not take the writer down either.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reply(outcome))).is_err() {
                tracing::error!("a store job's reply panicked");
            }
        }
        if let Some(why) = wal.broken() {
            // `/healthz` shows the writer down; every later job is refused.
            tracing::error!(reason = %why, "the store stops writing: its log failed");
            return;
        }
        // After the answers: the batch's writes are in the log, synced, and
        // visible, so its jobs do not wait for redb's sync (only the jobs
        // that arrive meanwhile do).
        if dirty && (wal.wants_checkpoint() || last_checkpoint.elapsed() >= CHECKPOINT_EVERY) {
            match idle_checkpoint(&db, &mut wal) {
                Ok(()) => (dirty, last_checkpoint) = (false, std::time::Instant::now()),
                Err(e) => {
                    // The log keeps every acknowledged write; redb must be opened again.
                    tracing::error!(error = %e, "a checkpoint of the store failed; the store stops writing (restart the server)");
                    return;
                }
            }
        }
    }
    // A clean stop: everything into redb, durably; the log is no longer needed.
    if wal.broken().is_none() {
        match idle_checkpoint(&db, &mut wal).map(|()| wal.close()) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the write-ahead log could not be removed after the last checkpoint"),
            Err(e) => tracing::error!(error = %e, "the last checkpoint failed; the log is replayed at the next start"),
        }
    }
}

/// A checkpoint with no jobs: syncs redb with everything committed so far.
fn idle_checkpoint(db: &Database, wal: &mut Wal) -> Result<()> {
    let tx = db.begin_write().map_err(backend)?;
    checkpoint_commit(tx)?;
    crate::metrics::metrics().checkpoints.inc();
    if let Err(e) = wal.checkpointed() {
        tracing::warn!(error = %e, "old segments of the write-ahead log could not be removed");
    }
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

struct ReadTx(redb::ReadTransaction);

impl Read for ReadTx {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>> {
        let t = self.0.open_table(def(table)).map_err(backend)?;
        Ok(t.get(key).map_err(backend)?.map(|v| v.value().to_vec()))
    }
    fn range(&self, table: Table, lo: Bound<&str>, hi: Bound<&str>, reverse: bool, f: &mut dyn FnMut(&str, &[u8]) -> Result<bool>) -> Result<()> {
        let t = self.0.open_table(def(table)).map_err(backend)?;
        range_table(&t, lo, hi, reverse, f)
    }
}

/// Applies `batch` in one transaction, appends its writes to the log (one
/// sync) and commits it to redb without a sync (the writer checkpoints
/// after answering). `Err((i, e))`: job `i` failed (nothing was committed); a
/// failing append or commit blames the last job.
fn commit_batch(db: &Database, wal: &mut Wal, batch: &[&Job]) -> std::result::Result<Vec<CommitOutcome>, (usize, StoreError)> {
    let last = batch.len().saturating_sub(1);
    if let Some(why) = wal.broken() {
        return Err((0, backend(format!("the store stopped writing after a failed write to its log ({why}); restart the server"))));
    }
    let mut tx = db.begin_write().map_err(|e| (0, backend(e)))?;
    tx.set_durability(Durability::None).map_err(|e| (0, backend(e)))?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let seq = wal.next_seq();
    let ops = {
        let mut w = WriteTx::new(&tx);
        for (i, job) in batch.iter().enumerate() {
            // A bug in a job's logic must not take the writer thread down with it.
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| logic::apply(&mut w, job)))
                .unwrap_or_else(|panic| Err(backend(format!("a store job panicked: {}", panic_message(&panic)))));
            outcomes.push(applied.map_err(|e| (i, e))?);
        }
        let ops = w.ops.take().unwrap_or_default();
        if !ops.is_empty() {
            w.put(Table::Meta, WAL_APPLIED, seq.to_string().as_bytes()).map_err(|e| (last, e))?;
        }
        ops
    };
    // Acknowledged means in the log and synced; redb follows without a sync.
    if !ops.is_empty() {
        let started = std::time::Instant::now();
        wal.append(seq, &ops).map_err(|e| (last, backend(format!("cannot write the store's log: {e}"))))?;
        crate::metrics::metrics().sync_seconds.observe(started.elapsed().as_secs_f64());
    }
    let committed = tx.commit().map_err(backend);
    if let Err(e) = committed {
        // The batch is taken back from the log (its jobs are told it failed,
        // so a restart must not apply it), and the writer stops: redb needs
        // to be opened again after a failed commit.
        if !ops.is_empty() && wal.retract(seq).is_err() {
            return Err((
                last,
                backend(format!(
                    "{e}; the store stopped writing. Restart the server and send requests that got no clear answer again with the same Idempotency-Key"
                )),
            ));
        }
        wal.poison(format!("redb refused a commit: {e}"));
        return Err((last, backend(format!("{e}; nothing of this request was applied. The store stopped writing: restart the server"))));
    }
    crate::metrics::metrics().batch_jobs.observe(batch.len() as f64);
    Ok(outcomes)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown".into())
}

impl Store for RedbStore {
    fn healthy(&self) -> bool {
        self.thread.lock().is_ok_and(|t| t.as_ref().is_some_and(|t| !t.is_finished()))
    }

    fn close(&self) {
        self.stop_writer();
    }

    fn submit(&self, job: Job) -> Result<CommitOutcome> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.submit_then(
            job,
            Box::new(move |outcome| {
                let _ = reply.send(outcome);
            }),
        );
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    fn submit_then(&self, job: Job, done: crate::Done) {
        let sender = match self.writer.lock() {
            Ok(w) => w.clone(),
            Err(_) => None,
        };
        let Some(sender) = sender else { return done(Err(StoreError::Closed)) };
        // Blocks only while the writer's queue is full (back-pressure).
        if let Err(std::sync::mpsc::SendError((_, done))) = sender.send((job, done)) {
            done(Err(StoreError::Closed));
        }
    }

    fn read(&self, f: &mut dyn FnMut(&dyn Read) -> Result<()>) -> Result<()> {
        let tx = ReadTx(self.db.begin_read().map_err(backend)?);
        f(&tx)
    }
}
