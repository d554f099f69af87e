//! The users and token hashes of stores written before accounts moved into
//! the main file (`auth.redb` beside it). Read once at start-up, imported,
//! and the file renamed, so nothing is lost on upgrade.

use crate::{Result, StoreError, from_bytes};
use flowform_core::Actor;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};

const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const TOKENS: TableDefinition<&str, &str> = TableDefinition::new("tokens");

/// What an old `auth.redb` held.
#[derive(Debug, Default)]
pub struct LegacyAuth {
    pub path: PathBuf,
    pub users: Vec<Actor>,
    /// (token hash, user id).
    pub tokens: Vec<(String, String)>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl LegacyAuth {
    /// Reads `dir/auth.redb` if it is there.
    pub fn read(dir: &Path) -> Result<Option<LegacyAuth>> {
        let path = dir.join("auth.redb");
        if !path.is_file() {
            return Ok(None);
        }
        let db = Database::open(&path).map_err(backend)?;
        let tx = db.begin_read().map_err(backend)?;
        let mut out = LegacyAuth { path: path.clone(), ..LegacyAuth::default() };
        if let Ok(users) = tx.open_table(USERS) {
            for entry in users.iter().map_err(backend)? {
                let (_, v) = entry.map_err(backend)?;
                out.users.push(from_bytes("user", v.value())?);
            }
        }
        if let Ok(tokens) = tx.open_table(TOKENS) {
            for entry in tokens.iter().map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                out.tokens.push((k.value().to_string(), v.value().to_string()));
            }
        }
        Ok(Some(out))
    }

    /// Renames the file once its contents are imported (kept, not deleted).
    pub fn retire(&self) -> Result<()> {
        std::fs::rename(&self.path, self.path.with_extension("redb.imported")).map_err(backend)
    }
}
