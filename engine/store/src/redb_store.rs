//! The embedded store on redb, with group commit.

use crate::apply::{Tables, apply};
use crate::auth::AuthFile;
use crate::memory::page;
use crate::*;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
const BUNDLES: TableDefinition<&str, &[u8]> = TableDefinition::new("bundles");
/// Bundle versions in the order they were first stored: sequence → version.
const BUNDLE_ORDER: TableDefinition<u64, &str> = TableDefinition::new("bundle_order");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// Commands waiting for the writer at most; more wait in `commit` (back-pressure).
const QUEUE: usize = 4096;
/// Commands in one commit at most.
const MAX_BATCH: usize = 512;

type Reply = Sender<Result<CommitOutcome>>;

pub struct RedbStore {
    db: Arc<Database>,
    writer: Mutex<Option<SyncSender<(CommandWrite, Reply)>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    auth: AuthFile,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl RedbStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<RedbStore> {
        std::fs::create_dir_all(dir).map_err(|e| backend(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("flowform.redb");
        let db = match Database::create(&path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked { path: path.display().to_string() });
            }
            Err(e) => return Err(backend(e)),
        };
        let db = Arc::new(db);
        {
            let tx = db.begin_write().map_err(backend)?;
            tx.open_table(INSTANCES).map_err(backend)?;
            tx.open_table(EVENTS).map_err(backend)?;
            tx.open_table(IDEMPOTENCY).map_err(backend)?;
            tx.open_table(BUNDLES).map_err(backend)?;
            tx.open_table(BUNDLE_ORDER).map_err(backend)?;
            tx.open_table(META).map_err(backend)?;
            tx.commit().map_err(backend)?;
        }
        let (tx, rx) = sync_channel(QUEUE);
        let writer_db = db.clone();
        let thread = std::thread::Builder::new().name("flowform-writer".into()).spawn(move || writer(writer_db, rx)).map_err(backend)?;
        Ok(RedbStore { db, writer: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)), auth: AuthFile::new(dir.join("auth.redb")) })
    }

    /// Users and tokens only, without opening the main database (which a
    /// running server holds): what `flowform token` uses.
    pub fn auth_only(dir: &Path) -> AuthOnly {
        AuthOnly(AuthFile::new(dir.join("auth.redb")))
    }

    fn read<T>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<T>) -> Result<T> {
        let tx = self.db.begin_read().map_err(backend)?;
        f(&tx)
    }
}

/// Access to users and tokens alone; see [`RedbStore::auth_only`].
pub struct AuthOnly(AuthFile);

impl AuthOnly {
    pub fn user(&self, id: &str) -> Result<Option<Actor>> {
        self.0.user(id)
    }
    pub fn users(&self) -> Result<Vec<Actor>> {
        self.0.users()
    }
    pub fn add_token(&self, token_hash: &str, user_id: &str) -> Result<()> {
        self.0.add_token(token_hash, user_id)
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

/// The writer thread: takes every queued command, applies them in one write
/// transaction and commits once with `Durability::Immediate` (fsync), then
/// answers each. A storage failure fails the whole batch, and nothing of it is
/// acknowledged.
fn writer(db: Arc<Database>, rx: Receiver<(CommandWrite, Reply)>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        match commit_batch(&db, &batch) {
            Ok(outcomes) => {
                for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, commands = batch.len(), "group commit failed");
                for (_, reply) in batch {
                    let _ = reply.send(Err(backend(&e)));
                }
            }
        }
    }
}

struct WriteTables<'t> {
    instances: redb::Table<'t, &'static str, &'static [u8]>,
    events: redb::Table<'t, (&'static str, u64), &'static [u8]>,
    idempotency: redb::Table<'t, &'static str, &'static [u8]>,
}

impl Tables for WriteTables<'_> {
    fn version_of(&mut self, id: &str) -> Result<Option<u64>> {
        match self.instances.get(id).map_err(backend)? {
            Some(bytes) => Ok(Some(from_bytes::<Instance>("instance", bytes.value())?.version)),
            None => Ok(None),
        }
    }
    fn idempotent(&mut self, key: &str) -> Result<Option<IdempotentResult>> {
        match self.idempotency.get(key).map_err(backend)? {
            Some(bytes) => Ok(Some(from_bytes("idempotency record", bytes.value())?)),
            None => Ok(None),
        }
    }
    fn put_instance(&mut self, instance: &Instance) -> Result<()> {
        self.instances.insert(instance.id.as_str(), to_bytes(instance)?.as_slice()).map_err(backend)?;
        Ok(())
    }
    fn put_event(&mut self, event: &Event) -> Result<()> {
        self.events.insert((event.instance_id.as_str(), event.seq), to_bytes(event)?.as_slice()).map_err(backend)?;
        Ok(())
    }
    fn put_idempotent(&mut self, key: &str, result: &IdempotentResult) -> Result<()> {
        self.idempotency.insert(key, to_bytes(result)?.as_slice()).map_err(backend)?;
        Ok(())
    }
}

fn commit_batch(db: &Database, batch: &[(CommandWrite, Reply)]) -> Result<Vec<CommitOutcome>> {
    let mut tx = db.begin_write().map_err(backend)?;
    tx.set_durability(Durability::Immediate).map_err(backend)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut tables = WriteTables {
            instances: tx.open_table(INSTANCES).map_err(backend)?,
            events: tx.open_table(EVENTS).map_err(backend)?,
            idempotency: tx.open_table(IDEMPOTENCY).map_err(backend)?,
        };
        for (write, _) in batch {
            outcomes.push(apply(&mut tables, write)?);
        }
    }
    tx.commit().map_err(backend)?;
    Ok(outcomes)
}

impl Store for RedbStore {
    fn commit(&self, write: CommandWrite) -> Result<CommitOutcome> {
        let sender = self.writer.lock().map_err(|_| StoreError::Closed)?.clone().ok_or(StoreError::Closed)?;
        let (reply, answer) = std::sync::mpsc::channel();
        sender.send((write, reply)).map_err(|_| StoreError::Closed)?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    fn instance(&self, id: &str) -> Result<Option<Instance>> {
        self.read(|tx| {
            let table = tx.open_table(INSTANCES).map_err(backend)?;
            match table.get(id).map_err(backend)? {
                Some(bytes) => Ok(Some(from_bytes("instance", bytes.value())?)),
                None => Ok(None),
            }
        })
    }

    fn instances(&self, filter: &InstanceFilter) -> Result<Page> {
        self.read(|tx| {
            let table = tx.open_table(INSTANCES).map_err(backend)?;
            let range = match &filter.before {
                Some(before) => table.range::<&str>(..before.as_str()).map_err(backend)?,
                None => table.range::<&str>(..).map_err(backend)?,
            };
            let mut decoded = Vec::new();
            let limit = filter.limit.clamp(1, 500);
            for entry in range.rev() {
                let (_, bytes) = entry.map_err(backend)?;
                let instance: Instance = from_bytes("instance", bytes.value())?;
                if filter.matches(&instance) {
                    decoded.push(instance);
                    if decoded.len() > limit {
                        break;
                    }
                }
            }
            Ok(page(decoded.iter(), filter))
        })
    }

    fn history(&self, id: &str) -> Result<Vec<Event>> {
        self.read(|tx| {
            let table = tx.open_table(EVENTS).map_err(backend)?;
            let mut out = Vec::new();
            for entry in table.range((id, 0)..=(id, u64::MAX)).map_err(backend)? {
                let (_, bytes) = entry.map_err(backend)?;
                out.push(from_bytes("event", bytes.value())?);
            }
            Ok(out)
        })
    }

    fn idempotent(&self, key: &str) -> Result<Option<IdempotentResult>> {
        self.read(|tx| {
            let table = tx.open_table(IDEMPOTENCY).map_err(backend)?;
            match table.get(key).map_err(backend)? {
                Some(bytes) => Ok(Some(from_bytes("idempotency record", bytes.value())?)),
                None => Ok(None),
            }
        })
    }

    fn put_bundle(&self, version: &str, sources: &Sources) -> Result<()> {
        let tx = self.db.begin_write().map_err(backend)?;
        {
            let mut table = tx.open_table(BUNDLES).map_err(backend)?;
            if table.get(version).map_err(backend)?.is_none() {
                table.insert(version, to_bytes(sources)?.as_slice()).map_err(backend)?;
                let mut order = tx.open_table(BUNDLE_ORDER).map_err(backend)?;
                let next = order.last().map_err(backend)?.map_or(0, |(k, _)| k.value() + 1);
                order.insert(next, version).map_err(backend)?;
            }
        }
        tx.commit().map_err(backend)
    }

    fn bundle(&self, version: &str) -> Result<Option<Sources>> {
        self.read(|tx| {
            let table = tx.open_table(BUNDLES).map_err(backend)?;
            match table.get(version).map_err(backend)? {
                Some(bytes) => Ok(Some(from_bytes("bundle sources", bytes.value())?)),
                None => Ok(None),
            }
        })
    }

    fn bundle_versions(&self) -> Result<Vec<String>> {
        self.read(|tx| {
            let table = tx.open_table(BUNDLE_ORDER).map_err(backend)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(backend)? {
                out.push(entry.map_err(backend)?.1.value().to_string());
            }
            Ok(out)
        })
    }

    fn set_current_bundle(&self, version: &str) -> Result<()> {
        let tx = self.db.begin_write().map_err(backend)?;
        tx.open_table(META).map_err(backend)?.insert("current_bundle", version).map_err(backend)?;
        tx.commit().map_err(backend)
    }

    fn current_bundle(&self) -> Result<Option<String>> {
        self.read(|tx| Ok(tx.open_table(META).map_err(backend)?.get("current_bundle").map_err(backend)?.map(|v| v.value().to_string())))
    }

    fn put_user(&self, user: &Actor) -> Result<()> {
        self.auth.put_user(user)
    }
    fn user(&self, id: &str) -> Result<Option<Actor>> {
        self.auth.user(id)
    }
    fn users(&self) -> Result<Vec<Actor>> {
        self.auth.users()
    }
    fn add_token(&self, token_hash: &str, user_id: &str) -> Result<()> {
        self.auth.add_token(token_hash, user_id)
    }
    fn user_for_token(&self, token_hash: &str) -> Result<Option<Actor>> {
        self.auth.user_for_token(token_hash)
    }
}
