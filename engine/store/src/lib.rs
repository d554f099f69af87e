//! Flowform storage: the [`Store`] trait and its implementations.
//!
//! - [`RedbStore`]: the embedded default. One redb file for instances, the
//!   event log, idempotency keys and bundle versions; concurrent commands are
//!   batched into one durable commit (group commit) by a writer thread. Users and
//!   API tokens live in a second small file that is opened only for a moment,
//!   so `flowform token` can add a token while the server runs.
//! - [`MemoryStore`]: the same semantics in memory, for tests.
//!
//! Invariant: a command is written in one transaction (instance, event,
//! idempotency key) or not at all, and only if the instance still has the
//! version the command was decided on.

mod apply;
mod auth;
mod memory;
mod redb_store;

use flowform_core::{Actor, Event, Instance};
use flowform_model::Sources;
use serde::{Deserialize, Serialize};

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

/// One command's writes, committed together or not at all.
#[derive(Clone, Debug)]
pub struct CommandWrite {
    /// The instance as the command leaves it; its `version` is the new version.
    pub instance: Instance,
    /// The version the instance must still have (0: it must not exist yet).
    pub expected_version: u64,
    pub event: Event,
    pub idempotency: Option<IdempotencyKey>,
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
    pub instance: Instance,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CommitOutcome {
    Committed,
    /// The instance changed since the command was decided (or already exists).
    Conflict {
        current_version: u64,
    },
    /// The idempotency key was used before: here is the first result.
    Replay(Box<IdempotentResult>),
}

#[derive(Clone, Debug, Default)]
pub struct InstanceFilter {
    pub workflow: Option<String>,
    pub state: Option<String>,
    pub team: Option<String>,
    pub assignee: Option<String>,
    /// Return instances created before this id (ids sort by creation time).
    pub before: Option<String>,
    pub limit: usize,
}

impl InstanceFilter {
    pub fn matches(&self, i: &Instance) -> bool {
        self.workflow.as_ref().is_none_or(|w| &i.workflow == w)
            && self.state.as_ref().is_none_or(|s| &i.state == s)
            && self.team.as_ref().is_none_or(|t| i.assignment.team.as_ref() == Some(t))
            && self.assignee.as_ref().is_none_or(|a| i.assignment.assignee.as_ref() == Some(a))
    }
}

/// A page of instances, newest first, with the cursor of the next page.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub items: Vec<Instance>,
    pub next: Option<String>,
}

/// Where instances, events, bundle versions and users are kept.
///
/// Implementations must make [`Store::commit`] atomic and durable before it
/// returns, and safe to call from many threads at once.
pub trait Store: Send + Sync + 'static {
    fn commit(&self, write: CommandWrite) -> Result<CommitOutcome>;
    fn instance(&self, id: &str) -> Result<Option<Instance>>;
    fn instances(&self, filter: &InstanceFilter) -> Result<Page>;
    /// Events of one instance, oldest first.
    fn history(&self, id: &str) -> Result<Vec<Event>>;
    fn idempotent(&self, key: &str) -> Result<Option<IdempotentResult>>;

    fn put_bundle(&self, version: &str, sources: &Sources) -> Result<()>;
    fn bundle(&self, version: &str) -> Result<Option<Sources>>;
    /// Every stored bundle version, oldest first.
    fn bundle_versions(&self) -> Result<Vec<String>>;
    /// Marks the version being served, so a restart with broken files can serve it.
    fn set_current_bundle(&self, version: &str) -> Result<()>;
    fn current_bundle(&self) -> Result<Option<String>>;

    fn put_user(&self, user: &Actor) -> Result<()>;
    fn user(&self, id: &str) -> Result<Option<Actor>>;
    fn users(&self) -> Result<Vec<Actor>>;
    /// Stores the hash of a new API token for a user.
    fn add_token(&self, token_hash: &str, user_id: &str) -> Result<()>;
    /// The user a token hash belongs to.
    fn user_for_token(&self, token_hash: &str) -> Result<Option<Actor>>;
}

fn to_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Backend(format!("cannot encode: {e}")))
}

fn from_bytes<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { what: what.to_string(), detail: e.to_string() })
}

#[cfg(test)]
mod tests;
