//! Users and API tokens in a small redb file of their own.
//!
//! redb lets one process hold a database file. The server holds the main file
//! for its lifetime, so this one is opened only for the moment of each access:
//! `flowform token` can then add a token while the server runs, and the server
//! sees it on the next request that presents it. Tokens are stored as SHA-256
//! hashes, never in clear.

use crate::{Result, StoreError, from_bytes, to_bytes};
use flowform_core::Actor;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const TOKENS: TableDefinition<&str, &str> = TableDefinition::new("tokens");

pub(crate) struct AuthFile {
    path: PathBuf,
    /// Everything in the file as of `seen`, so known tokens cost no file access.
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    seen: Option<SystemTime>,
    /// When an unknown token last forced a reload (see `user_for_token`).
    forced: Option<std::time::Instant>,
    tokens: HashMap<String, String>,
    users: HashMap<String, Actor>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl AuthFile {
    pub(crate) fn new(path: PathBuf) -> Self {
        AuthFile { path, cache: Mutex::new(Cache::default()) }
    }

    /// Opens the file, waiting briefly while another process has it open.
    fn open(&self) -> Result<Database> {
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent).map_err(backend)?;
        }
        for _ in 0..250 {
            match Database::create(&self.path) {
                Ok(db) => return Ok(db),
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(backend(e)),
            }
        }
        Err(StoreError::Locked { path: self.path.display().to_string() })
    }

    fn modified(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.path).and_then(|m| m.modified()).ok()
    }

    fn reload(&self, cache: &mut Cache) -> Result<()> {
        if !self.path.exists() {
            return Ok(());
        }
        let db = self.open()?;
        let tx = db.begin_read().map_err(backend)?;
        let mut fresh = Cache { seen: None, forced: cache.forced, ..Cache::default() };
        if let Ok(users) = tx.open_table(USERS) {
            for entry in users.iter().map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                fresh.users.insert(k.value().to_string(), from_bytes("user", v.value())?);
            }
        }
        if let Ok(tokens) = tx.open_table(TOKENS) {
            for entry in tokens.iter().map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                fresh.tokens.insert(k.value().to_string(), v.value().to_string());
            }
        }
        drop(tx);
        drop(db);
        // Opening and closing the file touches it: take its time only now, or
        // every access would see a "change" and read the file again.
        fresh.seen = self.modified();
        *cache = fresh;
        Ok(())
    }

    /// The cache, reloaded first if the file changed since it was read.
    fn fresh_cache(&self) -> Result<std::sync::MutexGuard<'_, Cache>> {
        let mut cache = self.cache.lock().map_err(|_| backend("auth cache poisoned"))?;
        if cache.seen.is_none() || cache.seen != self.modified() {
            self.reload(&mut cache)?;
        }
        Ok(cache)
    }

    fn write(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<()>) -> Result<()> {
        let db = self.open()?;
        let tx = db.begin_write().map_err(backend)?;
        f(&tx)?;
        tx.commit().map_err(backend)?;
        drop(db);
        if let Ok(mut cache) = self.cache.lock() {
            cache.seen = None;
        }
        Ok(())
    }

    pub(crate) fn put_user(&self, user: &Actor) -> Result<()> {
        self.write(|tx| {
            tx.open_table(USERS).map_err(backend)?.insert(user.id.as_str(), to_bytes(user)?.as_slice()).map_err(backend)?;
            Ok(())
        })
    }

    pub(crate) fn add_token(&self, token_hash: &str, user_id: &str) -> Result<()> {
        self.write(|tx| {
            tx.open_table(TOKENS).map_err(backend)?.insert(token_hash, user_id).map_err(backend)?;
            Ok(())
        })
    }

    pub(crate) fn user(&self, id: &str) -> Result<Option<Actor>> {
        Ok(self.fresh_cache()?.users.get(id).cloned())
    }

    pub(crate) fn users(&self) -> Result<Vec<Actor>> {
        let mut users: Vec<Actor> = self.fresh_cache()?.users.values().cloned().collect();
        users.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(users)
    }

    /// The user of a known token from the cache when the file has not changed
    /// since it was read: a stat, no file reading, so async code can ask first.
    /// `None` when only reading the file can tell.
    pub(crate) fn cached_user_for_token(&self, token_hash: &str) -> Option<Actor> {
        let cache = self.cache.lock().ok()?;
        if cache.seen.is_none() || cache.seen != self.modified() {
            return None;
        }
        cache.tokens.get(token_hash).and_then(|u| cache.users.get(u)).cloned()
    }

    pub(crate) fn user_for_token(&self, token_hash: &str) -> Result<Option<Actor>> {
        let mut cache = self.fresh_cache()?;
        if !cache.tokens.contains_key(token_hash) && cache.forced.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
            // A token added in the instant between a read and its time stamp would
            // otherwise wait for the next change of the file: read once more (at
            // most once a second, so unknown tokens cannot make the server read
            // the file on every request).
            cache.forced = Some(std::time::Instant::now());
            self.reload(&mut cache)?;
        }
        Ok(cache.tokens.get(token_hash).and_then(|u| cache.users.get(u)).cloned())
    }
}
