//! The checks of one command write, shared by every store implementation.

use crate::{CommandWrite, CommitOutcome, IdempotentResult, Result};
use flowform_core::{Event, Instance};

/// The table operations a write needs, inside one transaction.
pub(crate) trait Tables {
    fn version_of(&mut self, id: &str) -> Result<Option<u64>>;
    fn idempotent(&mut self, key: &str) -> Result<Option<IdempotentResult>>;
    fn put_instance(&mut self, instance: &Instance) -> Result<()>;
    fn put_event(&mut self, event: &Event) -> Result<()>;
    fn put_idempotent(&mut self, key: &str, result: &IdempotentResult) -> Result<()>;
}

pub(crate) fn apply(tables: &mut impl Tables, write: &CommandWrite) -> Result<CommitOutcome> {
    if let Some(idem) = &write.idempotency
        && let Some(first) = tables.idempotent(&idem.key)?
    {
        return Ok(CommitOutcome::Replay(Box::new(first)));
    }
    let current = tables.version_of(&write.instance.id)?.unwrap_or(0);
    if current != write.expected_version {
        return Ok(CommitOutcome::Conflict { current_version: current });
    }
    tables.put_instance(&write.instance)?;
    tables.put_event(&write.event)?;
    if let Some(idem) = &write.idempotency {
        tables.put_idempotent(&idem.key, &IdempotentResult { fingerprint: idem.fingerprint.clone(), instance: write.instance.clone() })?;
    }
    Ok(CommitOutcome::Committed)
}
