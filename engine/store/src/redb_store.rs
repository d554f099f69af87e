//! The embedded store on redb, with group commit.

use crate::tables::{Read, Table, Write};
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
        {
            let tx = db.begin_write().map_err(backend)?;
            for t in Table::ALL {
                tx.open_table(def(t)).map_err(backend)?;
            }
            tx.commit().map_err(backend)?;
        }
        let (tx, rx) = sync_channel(QUEUE);
        let writer_db = db.clone();
        let thread = std::thread::Builder::new().name("flowform-writer".into()).spawn(move || writer(writer_db, rx)).map_err(backend)?;
        let store = RedbStore { db, writer: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) };
        store.submit(Job::EnsureIndexes)?;
        Ok(store)
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
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

/// The writer thread: takes every queued job, applies them in one write
/// transaction and commits once with `Durability::Immediate` (fsync), then
/// answers each. When a job fails (an error, or a panic, which is caught) the
/// batch is rolled back; the jobs before it commit together again, the job
/// fails alone, and the jobs after it go on as a batch of their own — one
/// extra commit per failing job; the thread goes on.
fn writer(db: Arc<Database>, rx: Receiver<(Job, Reply)>) {
    while let Ok(first) = rx.recv() {
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
            match commit_batch(&db, rest) {
                Ok(done) => outcomes.extend(done.into_iter().map(Ok)),
                // The job at `failed` fails alone; those before it commit again without it.
                Err((failed, e)) => {
                    if failed > 0 {
                        match commit_batch(&db, &rest[..failed]) {
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
        for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
            if let Err(e) = &outcome {
                tracing::error!(error = %e, "a store job failed");
            }
            // A caller's callback that panics must not take the writer down either.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reply(outcome))).is_err() {
                tracing::error!("a store job's reply panicked");
            }
        }
    }
}

/// The tables of one write transaction, each opened once (opening a table is
/// not free, and a command touches several tables many times).
struct WriteTx<'t> {
    tx: &'t redb::WriteTransaction,
    open: std::cell::RefCell<std::collections::HashMap<Table, redb::Table<'t, &'static str, &'static [u8]>>>,
}

impl<'t> WriteTx<'t> {
    fn new(tx: &'t redb::WriteTransaction) -> Self {
        WriteTx { tx, open: std::cell::RefCell::new(std::collections::HashMap::new()) }
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
        self.with(table, |t| {
            t.insert(key, value).map_err(backend)?;
            Ok(())
        })
    }
    fn delete(&mut self, table: Table, key: &str) -> Result<()> {
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

/// Applies `batch` in one transaction and commits it. `Err((i, e))`: job `i`
/// failed (nothing was committed); a failing commit blames the last job.
fn commit_batch(db: &Database, batch: &[&Job]) -> std::result::Result<Vec<CommitOutcome>, (usize, StoreError)> {
    let last = batch.len().saturating_sub(1);
    let mut tx = db.begin_write().map_err(|e| (0, backend(e)))?;
    tx.set_durability(Durability::Immediate).map_err(|e| (0, backend(e)))?;
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut w = WriteTx::new(&tx);
        for (i, job) in batch.iter().enumerate() {
            // A bug in a job's logic must not take the writer thread down with it.
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| logic::apply(&mut w, job)))
                .unwrap_or_else(|panic| Err(backend(format!("a store job panicked: {}", panic_message(&panic)))));
            outcomes.push(applied.map_err(|e| (i, e))?);
        }
    }
    tx.commit().map_err(|e| (last, backend(e)))?;
    Ok(outcomes)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown".into())
}

impl Store for RedbStore {
    fn healthy(&self) -> bool {
        self.thread.lock().is_ok_and(|t| t.as_ref().is_some_and(|t| !t.is_finished()))
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
