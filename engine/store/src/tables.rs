//! The key-value view every store implementation provides. All logic
//! (`logic.rs`) is written once against these traits.

use crate::{Result, codec};
use flowform_core::Instance;
use std::ops::Bound;
use std::sync::Arc;

/// The tables of the store. Keys are strings; parts of composite keys are
/// joined with [`SEP`] and numbers are written so that keys sort in order
/// (zero-padded, [`num`]; an event's number short, [`event_key`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Instances,
    Events,
    Idempotency,
    Records,
    RecordEvents,
    /// target → source: who refers to a record.
    Refs,
    /// source → target: what a record refers to (to update `Refs` when it changes).
    RefsOut,
    Balances,
    Movements,
    LedgerEvents,
    Bundles,
    BundleOrder,
    Meta,
    /// due␟instance␟timer → timer
    Timers,
    /// instance␟timer → the key in `Timers`
    TimerIndex,
    /// user␟seq → inbox item
    Inbox,
    /// seq → outbox item
    Outbox,
    /// Secondary index of instances for the list filters: `w␟workflow␟id`,
    /// `ws␟workflow␟state␟id`, `wt␟workflow␟team␟id`, `wst␟workflow␟state␟team␟id`,
    /// `t␟team␟id`, `a␟assignee␟id`, `r␟requester␟id` → empty.
    InstanceIndex,
    /// workflow␟state␟team → number of instances (dashboards count without scanning).
    InstanceCounts,
    /// `r␟user␟workflow␟state␟team` (requested by), `a␟…` (assigned to),
    /// `b␟…` (both) → number of instances: what a restricted user sees,
    /// counted without scanning.
    UserCounts,
    /// next_at␟seq → empty: the pending outbox messages by when they are due,
    /// so delivery reads what is due, never the whole outbox.
    OutboxDue,
    /// user id → account.
    Users,
    /// SHA-256 of the token → token (its id, owner, name, expiry).
    Tokens,
    /// SHA-256 of the session id → session.
    Sessions,
    /// seq → security event.
    Audit,
}

impl Table {
    pub const ALL: [Table; 25] = [
        Table::Instances,
        Table::Events,
        Table::Idempotency,
        Table::Records,
        Table::RecordEvents,
        Table::Refs,
        Table::RefsOut,
        Table::Balances,
        Table::Movements,
        Table::LedgerEvents,
        Table::Bundles,
        Table::BundleOrder,
        Table::Meta,
        Table::Timers,
        Table::TimerIndex,
        Table::Inbox,
        Table::Outbox,
        Table::InstanceIndex,
        Table::InstanceCounts,
        Table::UserCounts,
        Table::OutboxDue,
        Table::Users,
        Table::Tokens,
        Table::Sessions,
        Table::Audit,
    ];

    /// Its place in [`Table::ALL`] (how the write-ahead log names it).
    pub fn index(self) -> u8 {
        self as u8
    }

    pub fn from_index(i: u8) -> Option<Table> {
        Table::ALL.get(i as usize).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Instances => "instances",
            Table::Events => "events",
            Table::Idempotency => "idempotency",
            Table::Records => "records",
            Table::RecordEvents => "record_events",
            Table::Refs => "refs",
            Table::RefsOut => "refs_out",
            Table::Balances => "balances",
            Table::Movements => "movements",
            Table::LedgerEvents => "ledger_events",
            Table::Bundles => "bundles",
            Table::BundleOrder => "bundle_order",
            Table::Meta => "meta",
            Table::Timers => "timers",
            Table::TimerIndex => "timer_index",
            Table::Inbox => "inbox",
            Table::Outbox => "outbox",
            Table::InstanceIndex => "instance_index",
            Table::InstanceCounts => "instance_counts",
            Table::UserCounts => "user_counts",
            Table::OutboxDue => "outbox_due",
            Table::Users => "users",
            Table::Tokens => "tokens",
            Table::Sessions => "sessions",
            Table::Audit => "audit",
        }
    }
}

#[cfg(test)]
mod event_keys {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_event_key_is_short_and_reads_back() {
        assert_eq!(event_key("I", 7), "I\u{1f}a7");
        assert_eq!(event_key("I", 12), "I\u{1f}b12");
        assert_eq!(event_key("I", u64::MAX), format!("I\u{1f}t{}", u64::MAX));
        for bad in ["", "a", "b1", "a12", "x1", "a-", "b1x", "u12345678901234567890"] {
            assert_eq!(event_seq(bad), None, "{bad:?}");
        }
        assert_eq!(event_seq(&num(42)), Some(42), "the keys written before");
    }

    proptest! {
        /// Keys sort as their numbers do, old (zero-padded) keys of lower
        /// numbers before new ones, and every key reads back its number.
        #[test]
        fn event_keys_sort_as_their_numbers(
            // Numbers of every length (any u64 is nearly always 19 or 20 digits).
            a in (0u32..64).prop_flat_map(|bits| 0..=(u64::MAX >> bits)),
            b in (0u32..64).prop_flat_map(|bits| 0..=(u64::MAX >> bits)),
        ) {
            let (ka, kb) = (event_key("I", a), event_key("I", b));
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(event_seq(ka.rsplit(SEP).next().unwrap()), Some(a));
            // Every key written before sorts first.
            prop_assert!(key(&["I", &num(b)]) < ka);
            let (from, to) = prefix_range("I");
            prop_assert!(from <= ka && ka < to);
        }
    }
}

#[cfg(test)]
#[test]
fn a_table_is_found_by_its_index() {
    for (i, t) in Table::ALL.iter().enumerate() {
        assert_eq!(t.index() as usize, i);
        assert_eq!(Table::from_index(t.index()), Some(*t));
    }
    assert_eq!(Table::from_index(Table::ALL.len() as u8), None);
    // The write-ahead log names tables by these numbers: a log written by one
    // version is replayed by the next. New tables go at the end, never between.
    let names: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
    assert_eq!(
        names,
        [
            "instances",
            "events",
            "idempotency",
            "records",
            "record_events",
            "refs",
            "refs_out",
            "balances",
            "movements",
            "ledger_events",
            "bundles",
            "bundle_order",
            "meta",
            "timers",
            "timer_index",
            "inbox",
            "outbox",
            "instance_index",
            "instance_counts",
            "user_counts",
            "outbox_due",
            "users",
            "tokens",
            "sessions",
            "audit"
        ]
    );
}

pub const SEP: char = '\u{1f}';

/// `a␟b␟c`.
pub fn key(parts: &[&str]) -> String {
    parts.join("\u{1f}")
}

/// A number that sorts as text.
pub fn num(n: u64) -> String {
    format!("{n:020}")
}

/// The key of an instance's event: `instance␟` and the event's number,
/// written short but sorting as a number: a letter for how many digits it
/// has (`a` for one … `t` for twenty), then the digits (`a7`, `b12`).
/// Events written before this key (the number zero-padded to twenty
/// digits) start with a digit, so they sort before every short one: an
/// instance's older events, whose numbers are lower, still come first.
pub fn event_key(instance: &str, seq: u64) -> String {
    let digits = seq.to_string();
    let mut k = String::with_capacity(instance.len() + 2 + digits.len());
    k.push_str(instance);
    k.push(SEP);
    k.push(char::from(b'a' + (digits.len() - 1) as u8));
    k.push_str(&digits);
    k
}

/// The number of an event key's number part (as [`event_key`] writes it,
/// or zero-padded as before it).
pub fn event_seq(part: &str) -> Option<u64> {
    let digits = match part.as_bytes().first()? {
        b'0'..=b'9' => part,
        c @ b'a'..=b't' if part.len() == usize::from(c - b'a') + 2 => &part[1..],
        _ => return None,
    };
    if digits.bytes().all(|b| b.is_ascii_digit()) { digits.parse().ok() } else { None }
}

/// The range of keys that start with `prefix␟`.
pub fn prefix_range(prefix: &str) -> (String, String) {
    (format!("{prefix}{SEP}"), format!("{prefix}\u{20}"))
}

/// Read access inside one consistent snapshot (or the current write transaction).
pub trait Read {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>>;
    /// Calls `f` for each entry in the range, in key order (or reversed),
    /// until it returns `false`.
    fn range(&self, table: Table, lo: Bound<&str>, hi: Bound<&str>, reverse: bool, f: &mut dyn FnMut(&str, &[u8]) -> Result<bool>) -> Result<()>;
    /// The instance stored under `id`, decoded. A view over batches the
    /// writer made answers from the instance it was given, without decoding
    /// its bytes (equal to it: the codec's round trip is tested).
    fn read_instance(&self, id: &str) -> Result<Option<Arc<Instance>>> {
        self.get(Table::Instances, id)?.map(|b| codec::decode_instance(id, &b).map(Arc::new)).transpose()
    }
}

pub trait Write: Read {
    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<()>;
    fn delete(&mut self, table: Table, key: &str) -> Result<()>;
    /// Writes an instance under its id (encoded; a batch also keeps it
    /// decoded for [`Read::read_instance`]).
    fn write_instance(&mut self, instance: &Arc<Instance>) -> Result<()> {
        self.put(Table::Instances, &instance.id, &codec::encode_instance(instance)?)
    }
}
