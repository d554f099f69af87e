//! An in-memory store with the same semantics as the redb one, for tests.

use crate::tables::{Read, Table, Write};
use crate::*;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Mutex;

/// The tables in memory (also the plain base the layered reads are tested against).
#[derive(Default, Clone)]
pub(crate) struct Tables(HashMap<Table, BTreeMap<String, Vec<u8>>>);

impl Read for Tables {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.0.get(&table).and_then(|t| t.get(key)).cloned())
    }
    fn range(&self, table: Table, lo: Bound<&str>, hi: Bound<&str>, reverse: bool, f: &mut dyn FnMut(&str, &[u8]) -> Result<bool>) -> Result<()> {
        let Some(t) = self.0.get(&table) else { return Ok(()) };
        let range = t.range::<str, _>((lo, hi));
        let iter: Box<dyn Iterator<Item = (&String, &Vec<u8>)>> = if reverse { Box::new(range.rev()) } else { Box::new(range) };
        for (k, v) in iter {
            if !f(k, v)? {
                break;
            }
        }
        Ok(())
    }
}

impl Write for Tables {
    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<()> {
        self.0.entry(table).or_default().insert(key.to_string(), value.to_vec());
        Ok(())
    }
    fn delete(&mut self, table: Table, key: &str) -> Result<()> {
        if let Some(t) = self.0.get_mut(&table) {
            t.remove(key);
        }
        Ok(())
    }
}

#[derive(Default)]
pub struct MemoryStore {
    pub(crate) tables: Mutex<Tables>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Backend("memory store poisoned".into())
}

impl Store for MemoryStore {
    fn submit(&self, job: Job) -> Result<CommitOutcome> {
        let mut tables = self.tables.lock().map_err(poisoned)?;
        logic::apply(&mut *tables, &job)
    }
    fn read(&self, f: &mut dyn FnMut(&dyn Read) -> Result<()>) -> Result<()> {
        let tables = self.tables.lock().map_err(poisoned)?;
        f(&*tables)
    }
}
