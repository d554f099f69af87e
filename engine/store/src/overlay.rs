//! Writes that are acknowledged (in the synced log) but not yet in redb.
//!
//! The writer thread decides a batch of jobs against a view of the store,
//! appends the batch's writes to the log, syncs it, and then publishes the
//! batch here: from that moment every reader sees it. The applier thread
//! copies published batches into redb in the background (many in one
//! transaction) and takes them away only after redb committed them. So a
//! command waits for the log's `fdatasync` and nothing of redb: redb's
//! copy-on-write work and its checkpoints happen beside the commands.
//!
//! A reader's view is the published batches plus a redb snapshot
//! (`Pending::view`): the list is read first, then a snapshot whose last
//! applied batch is no newer than the newest published when the list was
//! read (else both are taken again). Every batch missing from the list was
//! committed to redb before it left it, so the snapshot holds it, and the
//! view is exactly the state after that newest batch. A batch in both gives
//! the same values twice; the newest layer wins.

use crate::tables::{Read, Table};
use crate::{Result, codec};
use flowform_core::Instance;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

/// The writes of one log record: per table, each key's last value (`None`:
/// deleted).
pub(crate) struct Batch {
    pub seq: u64,
    tables: Vec<BTreeMap<String, Option<Vec<u8>>>>,
    /// The instances written through [`Batch::put_instance`], as given: a
    /// read of one is a reference, not a decoding of its bytes. Only for
    /// keys whose last write in this batch was that instance.
    instances: HashMap<String, Arc<Instance>>,
    /// The size of its log record and of the instances it keeps (what the
    /// writer's back-pressure counts).
    pub bytes: usize,
    /// About what the kept instances take in memory (counted when kept; one
    /// dropped again by a later write still counts: an overestimate).
    pub kept_bytes: usize,
    /// When it was made (the applier lets batches gather a little).
    pub published: std::time::Instant,
}

impl Batch {
    pub fn new(seq: u64) -> Batch {
        Batch {
            seq,
            tables: (0..Table::ALL.len()).map(|_| BTreeMap::new()).collect(),
            instances: HashMap::new(),
            bytes: 0,
            kept_bytes: 0,
            published: std::time::Instant::now(),
        }
    }

    pub fn put(&mut self, table: Table, key: &str, value: &[u8]) {
        if table == Table::Instances {
            self.instances.remove(key);
        }
        let t = &mut self.tables[table.index() as usize];
        match t.get_mut(key) {
            Some(slot) => *slot = Some(value.to_vec()),
            None => {
                t.insert(key.to_owned(), Some(value.to_vec()));
            }
        }
    }

    /// Writes an instance's encoded bytes and keeps the instance itself,
    /// when it is exactly what the bytes decode to (else a read decodes).
    pub fn put_instance(&mut self, instance: &Arc<Instance>, encoded: &[u8]) {
        self.put(Table::Instances, &instance.id, encoded);
        if codec::round_trips(instance) {
            self.instances.insert(instance.id.clone(), instance.clone());
            self.kept_bytes += KEPT_PER_ENCODED_BYTE * encoded.len();
        }
    }

    pub fn delete(&mut self, table: Table, key: &str) {
        if table == Table::Instances {
            self.instances.remove(key);
        }
        self.tables[table.index() as usize].insert(key.to_owned(), None);
    }

    /// `Some(None)`: deleted in this batch; `None`: not written here.
    fn get(&self, table: Table, key: &str) -> Option<Option<&[u8]>> {
        self.tables[table.index() as usize].get(key).map(|v| v.as_deref())
    }

    /// Every key's last write, table by table.
    pub fn entries(&self) -> impl Iterator<Item = (Table, &str, Option<&[u8]>)> {
        self.tables.iter().enumerate().flat_map(|(i, t)| {
            let table = Table::ALL[i];
            t.iter().map(move |(k, v)| (table, k.as_str(), v.as_deref()))
        })
    }
}

/// The last write of each key over `batches` (oldest first), table by
/// table in key order: what writing them one after the other leaves, with
/// each key written once. The applier copies many batches into one redb
/// transaction; a key several of them wrote (an order's instance and its
/// index entries, written by each of its commands; the counts many orders
/// share) then costs one B-tree write, not one per batch.
pub(crate) fn last_writes(batches: &[Arc<Batch>]) -> Vec<(Table, &str, Option<&[u8]>)> {
    if let [one] = batches {
        return one.entries().collect();
    }
    let mut out = Vec::new();
    for (i, table) in Table::ALL.iter().enumerate() {
        let mut last: BTreeMap<&str, Option<&[u8]>> = BTreeMap::new();
        for batch in batches {
            for (k, v) in &batch.tables[i] {
                last.insert(k, v.as_deref());
            }
        }
        out.extend(last.into_iter().map(|(k, v)| (*table, k, v)));
    }
    out
}

/// The instances written lately, decoded: what a read of one after its
/// batch left the overlay (redb took it) answers instead of decoding its
/// bytes again — the next command on an order reads the instance the last
/// one wrote.
///
/// Each entry is the last write of its key in any published batch, with
/// that batch's number: the writer records a batch here before publishing
/// it (an instance it kept; a plain write or a delete removes the key). So
/// for a view of the store as of batch `through`, an entry written by a
/// batch no newer than `through` is that view's value (nothing wrote the
/// key since); a newer entry is not, and the view reads redb. Dropping an
/// entry is always safe: the read decodes.
#[derive(Default)]
pub(crate) struct Recent {
    maps: std::sync::Mutex<RecentMaps>,
}

/// The instances kept, and the count tables' values (per table of
/// [`COUNTED`]; `None`: deleted): the writer adds to a count on almost
/// every command.
struct RecentMaps {
    instances: Generations<Arc<Instance>>,
    counts: [Generations<Option<Vec<u8>>>; COUNTED.len()],
}

impl Default for RecentMaps {
    fn default() -> Self {
        RecentMaps { instances: Generations::new(RECENT, RECENT_BYTES), counts: std::array::from_fn(|_| Generations::new(RECENT_COUNTS, usize::MAX)) }
    }
}

/// Each key's last write with its batch's number, in two generations: when
/// the newer fills up (in entries or in size) it becomes the older and the
/// older is let go, so at most twice the bounds are kept. A key is in one
/// generation at most.
struct Generations<V> {
    new: Generation<V>,
    /// About what the newer generation takes in memory.
    new_size: usize,
    old: Generation<V>,
    max_len: usize,
    max_size: usize,
}

type Generation<V> = HashMap<String, (u64, V)>;

impl<V: Clone> Generations<V> {
    fn new(max_len: usize, max_size: usize) -> Self {
        Generations { new: HashMap::new(), new_size: 0, old: HashMap::new(), max_len, max_size }
    }

    /// Keeps `value`, of about `size` bytes, as batch `seq`'s write of `key`;
    /// returns the generation let go, if one was.
    fn put(&mut self, key: &str, seq: u64, value: V, size: usize) -> Option<Generation<V>> {
        self.old.remove(key);
        let mut let_go = None;
        if (self.new.len() >= self.max_len || self.new_size.saturating_add(size) > self.max_size) && !self.new.contains_key(key) {
            let full = std::mem::take(&mut self.new);
            let_go = Some(std::mem::replace(&mut self.old, full));
            self.new_size = 0;
        }
        self.new_size = self.new_size.saturating_add(size);
        self.new.insert(key.to_owned(), (seq, value));
        let_go
    }

    fn forget(&mut self, key: &str) {
        self.new.remove(key);
        self.old.remove(key);
    }

    /// `key`'s value as of batch `through`, if kept.
    fn get(&self, key: &str, through: u64) -> Option<V> {
        let (seq, value) = self.new.get(key).or_else(|| self.old.get(key))?;
        (*seq <= through).then(|| value.clone())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.new.len() + self.old.len()
    }
}

/// The tables whose values [`Recent`] keeps: small, and read and written
/// by the writer for nearly every command.
const COUNTED: [Table; 2] = [Table::InstanceCounts, Table::UserCounts];
const RECENT_COUNTS: usize = 4096;

/// What one generation of [`Recent`] holds at most: instances, and about
/// how much memory they take (counted as the overlay counts kept ones,
/// from their encoded size).
const RECENT: usize = 1024;
const RECENT_BYTES: usize = 8 << 20;

/// The generations [`Recent`] let go: dropped by the caller once it holds
/// no lock (freeing a thousand instances takes a while).
#[derive(Default)]
pub(crate) struct Evicted {
    instances: Option<Generation<Arc<Instance>>>,
    counts: Vec<Generation<Option<Vec<u8>>>>,
}

impl Recent {
    fn maps(&self) -> std::sync::MutexGuard<'_, RecentMaps> {
        self.maps.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records what `batch` wrote to the instances and the count tables;
    /// called by the writer before the batch is published. Returns the
    /// generations it let go, to be dropped outside the locks.
    #[must_use]
    pub fn published(&self, batch: &Batch) -> Evicted {
        let written = &batch.tables[Table::Instances.index() as usize];
        let mut evicted = Evicted::default();
        if written.is_empty() && COUNTED.iter().all(|t| batch.tables[t.index() as usize].is_empty()) {
            return evicted;
        }
        let mut maps = self.maps();
        for (j, table) in COUNTED.iter().enumerate() {
            for (key, value) in &batch.tables[table.index() as usize] {
                evicted.counts.extend(maps.counts[j].put(key, batch.seq, value.clone(), 0));
            }
        }
        for (key, bytes) in written {
            match (batch.instances.get(key), bytes) {
                (Some(instance), Some(bytes)) => {
                    let size = KEPT_PER_ENCODED_BYTE * bytes.len();
                    if let Some(old) = maps.instances.put(key, batch.seq, instance.clone(), size) {
                        evicted.instances = Some(old);
                    }
                }
                _ => maps.instances.forget(key),
            }
        }
        evicted
    }

    /// The instance `id` as of batch `through`, if kept.
    pub fn get(&self, id: &str, through: u64) -> Option<Arc<Instance>> {
        self.maps().instances.get(id, through)
    }

    /// A count table's value of `key` as of batch `through`, if kept
    /// (`Some(None)`: it has none).
    pub fn value(&self, table: Table, key: &str, through: u64) -> Option<Option<Vec<u8>>> {
        let j = COUNTED.iter().position(|t| *t == table)?;
        self.maps().counts[j].get(key, through)
    }
}

/// A decoded instance takes about this many times its encoded size in
/// memory (its strings and data map, each entry allocated apart).
const KEPT_PER_ENCODED_BYTE: usize = 4;

/// Layers of batches over a base: the newest layer that wrote a key decides
/// its value, the base answers for keys none wrote.
pub(crate) struct Layered<'a> {
    /// Published batches, oldest first.
    pub layers: &'a [Arc<Batch>],
    /// The batch being decided (the writer's own), newest of all.
    pub own: Option<&'a Batch>,
    pub base: &'a dyn Read,
}

impl Layered<'_> {
    fn oldest_first(&self) -> impl DoubleEndedIterator<Item = &Batch> {
        self.layers.iter().map(|b| &**b).chain(self.own)
    }
}

impl Read for Layered<'_> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>> {
        for batch in self.oldest_first().rev() {
            if let Some(value) = batch.get(table, key) {
                return Ok(value.map(<[u8]>::to_vec));
            }
        }
        self.base.get(table, key)
    }

    fn read_instance(&self, id: &str) -> Result<Option<Arc<Instance>>> {
        for batch in self.oldest_first().rev() {
            if let Some(value) = batch.get(Table::Instances, id) {
                if let Some(instance) = batch.instances.get(id) {
                    return Ok(Some(instance.clone()));
                }
                return value.map(|b| codec::decode_instance(id, b).map(Arc::new)).transpose();
            }
        }
        self.base.read_instance(id)
    }

    fn range(&self, table: Table, lo: Bound<&str>, hi: Bound<&str>, reverse: bool, f: &mut dyn FnMut(&str, &[u8]) -> Result<bool>) -> Result<()> {
        if crossed(lo, hi) {
            return Ok(());
        }
        let mut over: BTreeMap<&str, Option<&[u8]>> = BTreeMap::new();
        for batch in self.oldest_first() {
            for (k, v) in batch.tables[table.index() as usize].range::<str, _>((lo, hi)) {
                over.insert(k, v.as_deref());
            }
        }
        if over.is_empty() {
            return self.base.range(table, lo, hi, reverse, f);
        }
        let entries: Vec<(&str, Option<&[u8]>)> = if reverse { over.into_iter().rev().collect() } else { over.into_iter().collect() };
        // Merge the base's keys with the layers' in the order asked for.
        let (mut next, mut stopped) = (0usize, false);
        self.base.range(table, lo, hi, reverse, &mut |k, v| {
            while let Some(&(ok, ov)) = entries.get(next) {
                let before = if reverse { ok > k } else { ok < k };
                if !before {
                    break;
                }
                next += 1;
                if let Some(ov) = ov
                    && !f(ok, ov)?
                {
                    stopped = true;
                    return Ok(false);
                }
            }
            let value = match entries.get(next) {
                Some(&(ok, ov)) if ok == k => {
                    next += 1;
                    ov
                }
                _ => Some(v),
            };
            if let Some(value) = value
                && !f(k, value)?
            {
                stopped = true;
                return Ok(false);
            }
            Ok(true)
        })?;
        if !stopped {
            for &(k, v) in &entries[next..] {
                if let Some(v) = v
                    && !f(k, v)?
                {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// Bounds that hold no key (a map's `range` panics on them).
fn crossed(lo: Bound<&str>, hi: Bound<&str>) -> bool {
    match (lo, hi) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => a >= b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Tables as Plain;
    use crate::tables::Write;
    use proptest::prelude::*;

    fn collect(r: &dyn Read, lo: Bound<&str>, hi: Bound<&str>, reverse: bool, limit: usize) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        r.range(Table::Instances, lo, hi, reverse, &mut |k, v| {
            out.push((k.to_string(), v.to_vec()));
            Ok(out.len() < limit)
        })
        .unwrap();
        out
    }

    fn bound(b: &Option<(bool, String)>) -> Bound<&str> {
        match b {
            None => Bound::Unbounded,
            Some((true, k)) => Bound::Included(k),
            Some((false, k)) => Bound::Excluded(k),
        }
    }

    /// A batch keeps the instance it was given and answers a read of it
    /// without decoding; the answer equals what its bytes decode to (what a
    /// read after redb took the batch returns). A later plain write or a
    /// delete of the key in the batch, or a newer batch's write, wins.
    #[test]
    fn an_instance_written_to_a_batch_reads_back_as_given_until_overwritten() {
        let mut given = crate::codec::tests::an_instance();
        let id = given.id.clone();
        let base = Plain::default();
        let mut older = Batch::new(1);
        let arc = Arc::new(given.clone());
        older.put_instance(&arc, &codec::encode_instance(&given).unwrap());
        let layers = vec![Arc::new(older)];
        let layered = Layered { layers: &layers, own: None, base: &base };
        let read = layered.read_instance(&id).unwrap().unwrap();
        assert!(Arc::ptr_eq(&read, &arc), "the kept instance, not a decoding");
        let bytes = layered.get(Table::Instances, &id).unwrap().unwrap();
        assert_eq!(*read, codec::decode_instance(&id, &bytes).unwrap());

        // A newer batch's plain write of the key wins over the kept instance.
        given.version += 1;
        given.state = "reopened".into();
        let mut own = Batch::new(2);
        own.put(Table::Instances, &id, &codec::encode_instance(&given).unwrap());
        let layered = Layered { layers: &layers, own: Some(&own), base: &base };
        assert_eq!(*layered.read_instance(&id).unwrap().unwrap(), given);

        // In one batch: a plain write after the kept instance, then a delete.
        let mut one = Batch::new(3);
        one.put_instance(&arc, &codec::encode_instance(&arc).unwrap());
        one.put(Table::Instances, &id, &codec::encode_instance(&given).unwrap());
        let only = Layered { layers: &[], own: Some(&one), base: &base };
        assert_eq!(*only.read_instance(&id).unwrap().unwrap(), given);
        one.put_instance(&arc, &codec::encode_instance(&arc).unwrap());
        one.delete(Table::Instances, &id);
        let only = Layered { layers: &[], own: Some(&one), base: &base };
        assert_eq!(only.read_instance(&id).unwrap(), None);

        // A time finer than the codec keeps (milliseconds): not kept, the
        // read decodes, so it equals what a read from redb returns later.
        let mut fine = crate::codec::tests::an_instance();
        fine.updated_at = flowform_core::time::tm("2026-12-01T13:33:11.045123456Z");
        let fine = Arc::new(fine);
        let bytes = codec::encode_instance(&fine).unwrap();
        let mut b = Batch::new(4);
        b.put_instance(&fine, &bytes);
        assert_eq!(b.kept_bytes, 0);
        let only = Layered { layers: &[], own: Some(&b), base: &base };
        let read = only.read_instance(&id).unwrap().unwrap();
        assert_eq!(*read, codec::decode_instance(&id, &bytes).unwrap());
        assert_ne!(*read, *fine, "the codec keeps milliseconds");
    }

    /// `Recent` answers for a view only with the last write of a key, and
    /// only when the view holds that write; a plain write or a delete
    /// forgets the key; it keeps at most two generations.
    #[test]
    fn recent_instances_answer_only_for_views_that_hold_their_write() {
        let recent = Recent::default();
        let mut given = crate::codec::tests::an_instance();
        let id = given.id.clone();
        let kept = |seq: u64, i: &Instance| {
            let mut b = Batch::new(seq);
            let arc = Arc::new(i.clone());
            b.put_instance(&arc, &codec::encode_instance(i).unwrap());
            (b, arc)
        };
        let (b5, arc5) = kept(5, &given);
        let _ = recent.published(&b5);
        assert!(recent.get(&id, 4).is_none(), "a view older than the write reads redb");
        assert!(Arc::ptr_eq(&recent.get(&id, 5).unwrap(), &arc5));
        assert!(Arc::ptr_eq(&recent.get(&id, 9).unwrap(), &arc5));

        // A newer kept write replaces it: older views no longer get an answer.
        given.version += 1;
        let (b7, arc7) = kept(7, &given);
        let _ = recent.published(&b7);
        assert!(recent.get(&id, 6).is_none());
        assert!(Arc::ptr_eq(&recent.get(&id, 7).unwrap(), &arc7));

        // A plain write (not kept) or a delete forgets the key.
        let mut plain = Batch::new(8);
        plain.put(Table::Instances, &id, &codec::encode_instance(&given).unwrap());
        let _ = recent.published(&plain);
        assert!(recent.get(&id, 9).is_none());
        let (b10, _) = kept(10, &given);
        let _ = recent.published(&b10);
        let mut gone = Batch::new(11);
        gone.delete(Table::Instances, &id);
        let _ = recent.published(&gone);
        assert!(recent.get(&id, 11).is_none());

        // Other tables' writes do not touch it.
        let (b12, arc12) = kept(12, &given);
        let _ = recent.published(&b12);
        let mut other = Batch::new(13);
        other.put(Table::Events, &id, b"x");
        let _ = recent.published(&other);
        assert!(Arc::ptr_eq(&recent.get(&id, 13).unwrap(), &arc12));

        // The count tables: every write is kept, a delete as "none".
        let mut counts = Batch::new(16);
        counts.put(Table::UserCounts, "a\u{1f}u1", b"3");
        counts.delete(Table::InstanceCounts, "repair\u{1f}closed\u{1f}");
        let _ = recent.published(&counts);
        assert_eq!(recent.value(Table::UserCounts, "a\u{1f}u1", 16), Some(Some(b"3".to_vec())));
        assert_eq!(recent.value(Table::UserCounts, "a\u{1f}u1", 15), None, "older views read redb");
        assert_eq!(recent.value(Table::InstanceCounts, "repair\u{1f}closed\u{1f}", 20), Some(None));
        assert_eq!(recent.value(Table::Events, "a\u{1f}u1", 20), None, "other tables are not kept");
        for n in 0..2 * RECENT_COUNTS {
            let mut b = Batch::new(17);
            b.put(Table::UserCounts, &format!("k{n}"), b"1");
            let _ = recent.published(&b);
        }
        assert_eq!(recent.value(Table::UserCounts, "a\u{1f}u1", 17), None, "bounded");

        // Bounded: after two generations' worth of other instances it is
        // gone, and the generations let go are handed back to be dropped.
        let mut let_go = 0;
        for n in 0..2 * RECENT {
            let mut i = crate::codec::tests::an_instance();
            i.id = format!("other-{n}");
            let_go += recent.published(&kept(14, &i).0).instances.is_some() as usize;
        }
        assert!(recent.get(&id, 14).is_none());
        assert_eq!(let_go, 2);
        let maps = recent.maps();
        assert!(maps.instances.len() <= 2 * RECENT);
        drop(maps);

        // Bounded in memory too: a few large instances fill a generation.
        let recent = Recent::default();
        let mut big = crate::codec::tests::an_instance();
        big.data.insert("notes".into(), serde_json::Value::String("x".repeat(RECENT_BYTES / KEPT_PER_ENCODED_BYTE / 3)));
        let mut let_go = 0;
        for n in 0..7 {
            big.id = format!("big-{n}");
            let_go += recent.published(&kept(15, &big).0).instances.is_some() as usize;
        }
        assert!(let_go >= 2, "large instances rotate the generations early");
        let maps = recent.maps();
        assert!(maps.instances.len() <= 6);
    }

    proptest! {
        /// Writing the batches' last writes leaves what writing every batch
        /// in order leaves, in every table.
        #[test]
        fn last_writes_leave_what_every_write_in_order_leaves(
            base in proptest::collection::vec((0u8..4, 0u8..20, 0u8..5), 0..30),
            batches in proptest::collection::vec(proptest::collection::vec((0u8..4, 0u8..20, proptest::option::of(0u8..5)), 0..12), 0..6),
        ) {
            const TABLES: [Table; 4] = [Table::Instances, Table::InstanceCounts, Table::UserCounts, Table::Events];
            let table = |t: u8| TABLES[t as usize];
            let key = |k: u8| format!("k{k:02}");
            let mut one_by_one = Plain::default();
            for (t, k, v) in &base {
                one_by_one.put(table(*t), &key(*k), &[*v]).unwrap();
            }
            let mut merged = one_by_one.clone();
            let batches: Vec<Arc<Batch>> = batches
                .iter()
                .enumerate()
                .map(|(i, ops)| {
                    let mut b = Batch::new(i as u64 + 1);
                    for (t, k, v) in ops {
                        match v {
                            Some(v) => b.put(table(*t), &key(*k), &[*v]),
                            None => b.delete(table(*t), &key(*k)),
                        }
                    }
                    Arc::new(b)
                })
                .collect();
            for b in &batches {
                for (t, k, v) in b.entries() {
                    match v {
                        Some(v) => one_by_one.put(t, k, v).unwrap(),
                        None => one_by_one.delete(t, k).unwrap(),
                    }
                }
            }
            let writes = last_writes(&batches);
            let mut seen = std::collections::HashSet::new();
            for (t, k, v) in writes {
                prop_assert!(seen.insert((t, k.to_string())), "each key written once");
                match v {
                    Some(v) => merged.put(t, k, v).unwrap(),
                    None => merged.delete(t, k).unwrap(),
                }
            }
            for t in TABLES {
                let all = |r: &Plain| {
                    let mut out = Vec::new();
                    r.range(t, Bound::Unbounded, Bound::Unbounded, false, &mut |k, v| {
                        out.push((k.to_string(), v.to_vec()));
                        Ok(true)
                    })
                    .unwrap();
                    out
                };
                prop_assert_eq!(all(&merged), all(&one_by_one));
            }
        }

        /// A base with batches layered over it reads exactly like the base
        /// with the batches' writes applied in order: gets, and ranges both
        /// ways, with any bounds and stopping early.
        #[test]
        fn layers_read_like_their_writes_applied(
            base in proptest::collection::vec((0u8..40, 0u8..5), 0..30),
            batches in proptest::collection::vec(proptest::collection::vec((0u8..40, proptest::option::of(0u8..5)), 0..12), 0..5),
            own in proptest::collection::vec((0u8..40, proptest::option::of(0u8..5)), 0..8),
            lo in proptest::option::of((any::<bool>(), 0u8..40)),
            hi in proptest::option::of((any::<bool>(), 0u8..40)),
            reverse in any::<bool>(),
            limit in 1usize..50,
        ) {
            let key = |k: u8| format!("k{k:02}");
            let mut plain = Plain::default();
            for (k, v) in &base {
                plain.put(Table::Instances, &key(*k), &[*v]).unwrap();
            }
            let mut expected = plain.clone();
            let mut apply = |ops: &[(u8, Option<u8>)], seq: u64| {
                let mut b = Batch::new(seq);
                for (k, v) in ops {
                    match v {
                        Some(v) => {
                            b.put(Table::Instances, &key(*k), &[*v]);
                            expected.put(Table::Instances, &key(*k), &[*v]).unwrap();
                        }
                        None => {
                            b.delete(Table::Instances, &key(*k));
                            expected.delete(Table::Instances, &key(*k)).unwrap();
                        }
                    }
                }
                b
            };
            let layers: Vec<Arc<Batch>> = batches.iter().enumerate().map(|(i, ops)| Arc::new(apply(ops, i as u64 + 1))).collect();
            let own = apply(&own, 99);
            let layered = Layered { layers: &layers, own: Some(&own), base: &plain };
            for k in 0..40u8 {
                prop_assert_eq!(layered.get(Table::Instances, &key(k)).unwrap(), expected.get(Table::Instances, &key(k)).unwrap());
            }
            let lo = lo.map(|(i, k)| (i, key(k)));
            let hi = hi.map(|(i, k)| (i, key(k)));
            // Bounds that cross are an empty range for both (BTreeMap panics on them).
            if let (Some((_, a)), Some((_, b))) = (&lo, &hi) && a >= b {
                return Ok(());
            }
            prop_assert_eq!(
                collect(&layered, bound(&lo), bound(&hi), reverse, limit),
                collect(&expected, bound(&lo), bound(&hi), reverse, limit)
            );
        }
    }
}
