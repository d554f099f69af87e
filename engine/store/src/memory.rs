//! An in-memory store with the same semantics as the redb one, for tests.

use crate::apply::{Tables, apply};
use crate::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

#[derive(Default)]
struct Inner {
    instances: BTreeMap<String, Instance>,
    events: BTreeMap<(String, u64), Event>,
    idempotency: HashMap<String, IdempotentResult>,
    bundles: HashMap<String, Sources>,
    bundle_order: Vec<String>,
    current_bundle: Option<String>,
    users: BTreeMap<String, Actor>,
    tokens: HashMap<String, String>,
}

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>> {
        self.inner.lock().map_err(|_| StoreError::Backend("memory store poisoned".into()))
    }
}

impl Tables for Inner {
    fn version_of(&mut self, id: &str) -> Result<Option<u64>> {
        Ok(self.instances.get(id).map(|i| i.version))
    }
    fn idempotent(&mut self, key: &str) -> Result<Option<IdempotentResult>> {
        Ok(self.idempotency.get(key).cloned())
    }
    fn put_instance(&mut self, instance: &Instance) -> Result<()> {
        self.instances.insert(instance.id.clone(), instance.clone());
        Ok(())
    }
    fn put_event(&mut self, event: &Event) -> Result<()> {
        self.events.insert((event.instance_id.clone(), event.seq), event.clone());
        Ok(())
    }
    fn put_idempotent(&mut self, key: &str, result: &IdempotentResult) -> Result<()> {
        self.idempotency.insert(key.to_string(), result.clone());
        Ok(())
    }
}

impl Store for MemoryStore {
    fn commit(&self, write: CommandWrite) -> Result<CommitOutcome> {
        apply(&mut *self.lock()?, &write)
    }
    fn instance(&self, id: &str) -> Result<Option<Instance>> {
        Ok(self.lock()?.instances.get(id).cloned())
    }
    fn instances(&self, filter: &InstanceFilter) -> Result<Page> {
        let inner = self.lock()?;
        let iter: Box<dyn Iterator<Item = &Instance>> = match &filter.before {
            Some(before) => Box::new(inner.instances.range(..before.clone()).rev().map(|(_, i)| i)),
            None => Box::new(inner.instances.values().rev()),
        };
        Ok(page(iter, filter))
    }
    fn history(&self, id: &str) -> Result<Vec<Event>> {
        let inner = self.lock()?;
        Ok(inner.events.range((id.to_string(), 0)..=(id.to_string(), u64::MAX)).map(|(_, e)| e.clone()).collect())
    }
    fn idempotent(&self, key: &str) -> Result<Option<IdempotentResult>> {
        Ok(self.lock()?.idempotency.get(key).cloned())
    }
    fn put_bundle(&self, version: &str, sources: &Sources) -> Result<()> {
        let mut inner = self.lock()?;
        if inner.bundles.insert(version.to_string(), sources.clone()).is_none() {
            inner.bundle_order.push(version.to_string());
        }
        Ok(())
    }
    fn bundle_versions(&self) -> Result<Vec<String>> {
        Ok(self.lock()?.bundle_order.clone())
    }
    fn set_current_bundle(&self, version: &str) -> Result<()> {
        self.lock()?.current_bundle = Some(version.to_string());
        Ok(())
    }
    fn current_bundle(&self) -> Result<Option<String>> {
        Ok(self.lock()?.current_bundle.clone())
    }
    fn bundle(&self, version: &str) -> Result<Option<Sources>> {
        Ok(self.lock()?.bundles.get(version).cloned())
    }
    fn put_user(&self, user: &Actor) -> Result<()> {
        self.lock()?.users.insert(user.id.clone(), user.clone());
        Ok(())
    }
    fn user(&self, id: &str) -> Result<Option<Actor>> {
        Ok(self.lock()?.users.get(id).cloned())
    }
    fn users(&self) -> Result<Vec<Actor>> {
        Ok(self.lock()?.users.values().cloned().collect())
    }
    fn add_token(&self, token_hash: &str, user_id: &str) -> Result<()> {
        self.lock()?.tokens.insert(token_hash.to_string(), user_id.to_string());
        Ok(())
    }
    fn user_for_token(&self, token_hash: &str) -> Result<Option<Actor>> {
        let inner = self.lock()?;
        Ok(inner.tokens.get(token_hash).and_then(|u| inner.users.get(u)).cloned())
    }
}

/// Filters an iterator of instances (newest first) into a page.
pub(crate) fn page<'a>(iter: impl Iterator<Item = &'a Instance>, filter: &InstanceFilter) -> Page {
    let limit = filter.limit.clamp(1, 500);
    let mut items: Vec<Instance> = iter.filter(|i| filter.matches(i)).take(limit + 1).cloned().collect();
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|i| i.id.clone())
    } else {
        None
    };
    Page { items, next }
}
