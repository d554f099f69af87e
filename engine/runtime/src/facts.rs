//! Report facts: per workflow, the instances as rows of the fields reports
//! name, kept in memory so a report over a million orders reads no store.
//!
//! Each cell is an index into its column's dictionary of distinct values, so
//! a row of fifteen fields is sixty bytes and a condition reads a `&Value`
//! with no allocation. Rows are ordered by creation time (a range is a binary
//! search). Built in the background on the first report of a workflow (the
//! report meanwhile reads the store, as before), then updated by every
//! committed command; rebuilt when the reports start naming other fields.

use flowform_core::Instance;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, RwLock};

/// One column's distinct values.
#[derive(Default)]
struct Dictionary {
    values: Vec<Value>,
    index: HashMap<String, u32>,
}

impl Dictionary {
    fn id(&mut self, v: &Value) -> u32 {
        let key = v.to_string();
        if let Some(i) = self.index.get(&key) {
            return *i;
        }
        let i = self.values.len() as u32;
        self.values.push(v.clone());
        self.index.insert(key, i);
        i
    }
}

/// Time cells: a timestamp text kept as a number. The runtime writes times
/// as `2026-11-25T05:00:00.000Z` (`{:.3}`); those and the plain form
/// (`2026-11-25T05:00:00Z`) are kept as milliseconds with the form in the
/// low bit, and give back the very text they were read from. Anything else
/// (no time, another form, a finer time) is kept as it is in `odd`.
#[derive(Default)]
struct Times {
    odd: Vec<Value>,
    /// The cell of each odd value (an odd value is kept once).
    odd_cells: HashMap<String, i64>,
}

const NO_TIME: i64 = i64::MIN;

impl Times {
    fn encode(&mut self, v: &Value) -> i64 {
        if v.is_null() {
            return NO_TIME;
        }
        if let Some(text) = v.as_str()
            && let Ok(t) = text.parse::<jiff::Timestamp>()
            && let Ok(ms) = jiff::Timestamp::from_millisecond(t.as_millisecond())
            && ms == t
        {
            if flowform_core::Time::from(t).to_string() == text {
                return t.as_millisecond() << 1;
            }
            if t.to_string() == text {
                return (t.as_millisecond() << 1) | 1;
            }
        }
        let key = v.to_string();
        if let Some(c) = self.odd_cells.get(&key) {
            return *c;
        }
        self.odd.push(v.clone());
        let c = NO_TIME + self.odd.len() as i64;
        self.odd_cells.insert(key, c);
        c
    }

    /// Whether cell `c` holds `v` (an unchanged time keeps its cell).
    fn holds(&self, c: i64, v: &Value) -> bool {
        match c {
            NO_TIME => v.is_null(),
            c if c < NO_TIME + 1 + self.odd.len() as i64 => self.odd[(c - NO_TIME - 1) as usize] == *v,
            c => self.value(c) == *v,
        }
    }

    fn is_odd(&self, c: i64) -> Option<&Value> {
        (c != NO_TIME && c <= NO_TIME + self.odd.len() as i64).then(|| &self.odd[(c - NO_TIME - 1) as usize])
    }

    /// The microseconds since the epoch of cell `c`.
    fn micros(&self, c: i64) -> Option<i64> {
        match c {
            NO_TIME => None,
            c => match self.is_odd(c) {
                Some(v) => flowform_core::reports::micros(v),
                None => Some((c >> 1) * 1000),
            },
        }
    }

    /// The text cell `c` was read from.
    fn value(&self, c: i64) -> Value {
        if c == NO_TIME {
            return Value::Null;
        }
        if let Some(v) = self.is_odd(c) {
            return v.clone();
        }
        match jiff::Timestamp::from_millisecond(c >> 1) {
            Ok(t) if c & 1 == 0 => Value::String(flowform_core::Time::from(t).to_string()),
            Ok(t) => Value::String(t.to_string()),
            Err(_) => Value::Null,
        }
    }
}

/// Instance ids as 128-bit keys: a ULID in its canonical text is its own
/// number; any other id is numbered here, with the 48 time bits all set (a
/// ULID from the year 10889, which is numbered like any other id).
#[derive(Default)]
struct Ids {
    other: Vec<String>,
    numbers: HashMap<String, u128>,
}

const OTHER_ID: u128 = 0xFFFF_FFFF_FFFF << 80;

fn ulid_key(id: &str) -> Option<u128> {
    let u = ulid::Ulid::from_string(id).ok()?;
    let mut buf = [0u8; ulid::ULID_LEN];
    (u.0 & OTHER_ID != OTHER_ID && u.array_to_str(&mut buf) == id).then_some(u.0)
}

impl Ids {
    fn key(&mut self, id: &str) -> u128 {
        if let Some(k) = self.find(id) {
            return k;
        }
        let k = OTHER_ID | self.other.len() as u128;
        self.other.push(id.to_string());
        self.numbers.insert(id.to_string(), k);
        k
    }

    fn find(&self, id: &str) -> Option<u128> {
        ulid_key(id).or_else(|| self.numbers.get(id).copied())
    }

    fn text(&self, k: u128) -> String {
        if k & OTHER_ID == OTHER_ID { self.other.get((k & !OTHER_ID) as usize).cloned().unwrap_or_default() } else { ulid::Ulid(k).to_string() }
    }

    /// Whether `k` is a ULID's own number (the same in every table).
    fn is_ulid(k: u128) -> bool {
        k & OTHER_ID != OTHER_ID
    }
}

/// One column's dictionary ids, a byte each while the dictionary has at
/// most 256 values, two bytes up to 65,536, four beyond (widened as it grows).
#[derive(Clone)]
enum Codes {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
}

impl Codes {
    fn get(&self, r: usize) -> u32 {
        match self {
            Codes::U8(v) => v[r] as u32,
            Codes::U16(v) => v[r] as u32,
            Codes::U32(v) => v[r],
        }
    }

    /// Makes room for the id `id`.
    fn widen(&mut self, id: u32) {
        match self {
            Codes::U8(v) if id > u8::MAX as u32 => *self = Codes::U16(v.iter().map(|&c| c as u16).collect()),
            Codes::U16(v) if id > u16::MAX as u32 => *self = Codes::U32(v.iter().map(|&c| c as u32).collect()),
            _ => return,
        }
        self.widen(id);
    }

    fn set(&mut self, r: usize, id: u32) {
        self.widen(id);
        match self {
            Codes::U8(v) => v[r] = id as u8,
            Codes::U16(v) => v[r] = id as u16,
            Codes::U32(v) => v[r] = id,
        }
    }

    fn insert(&mut self, at: usize, id: u32) {
        self.widen(id);
        match self {
            Codes::U8(v) => v.insert(at, id as u8),
            Codes::U16(v) => v.insert(at, id as u16),
            Codes::U32(v) => v.insert(at, id),
        }
    }

    fn push(&mut self, id: u32) {
        let at = self.len();
        self.insert(at, id);
    }

    fn len(&self) -> usize {
        match self {
            Codes::U8(v) => v.len(),
            Codes::U16(v) => v.len(),
            Codes::U32(v) => v.len(),
        }
    }

    fn reverse(&mut self) {
        match self {
            Codes::U8(v) => v.reverse(),
            Codes::U16(v) => v.reverse(),
            Codes::U32(v) => v.reverse(),
        }
    }

    fn shrink_to_fit(&mut self) {
        match self {
            Codes::U8(v) => v.shrink_to_fit(),
            Codes::U16(v) => v.shrink_to_fit(),
            Codes::U32(v) => v.shrink_to_fit(),
        }
    }

    fn reordered(&self, order: &[usize]) -> Codes {
        match self {
            Codes::U8(v) => Codes::U8(order.iter().map(|&r| v[r]).collect()),
            Codes::U16(v) => Codes::U16(order.iter().map(|&r| v[r]).collect()),
            Codes::U32(v) => Codes::U32(order.iter().map(|&r| v[r]).collect()),
        }
    }
}

/// Row numbers found by their instance key; the keys themselves live in the
/// table's `keys` (by row), which every call is given.
#[derive(Default)]
struct RowIndex {
    rows: hashbrown::HashTable<u32>,
    state: foldhash::fast::RandomState,
}

impl RowIndex {
    fn get(&self, keys: &[u128], key: u128) -> Option<u32> {
        self.rows.find(self.state.hash_one(key), |&r| keys[r as usize] == key).copied()
    }

    /// Adds row `row`, whose key `keys[row]` is `key` (not yet in the index).
    fn insert(&mut self, keys: &[u128], key: u128, row: u32) {
        let state = &self.state;
        self.rows.insert_unique(state.hash_one(key), row, |&r| state.hash_one(keys[r as usize]));
    }

    /// Gives every row its new number (the keys having moved with them).
    fn renumber(&mut self, new: impl Fn(u32) -> u32) {
        for r in self.rows.iter_mut() {
            *r = new(*r);
        }
    }
}

/// Where a column's cells are.
#[derive(Clone, Copy)]
enum Place {
    /// A dictionary id in the row's cells, at this position.
    Cell(usize),
    /// A time, in this time column.
    Time(usize),
}

/// The facts of one workflow.
pub struct FactTable {
    /// Column names, in cell order.
    pub columns: Vec<String>,
    slots: Vec<Place>,
    /// Per cell column.
    dictionaries: Vec<Dictionary>,
    /// Per cell column, the rows' dictionary ids.
    cells: Vec<Codes>,
    /// Per time column (`*_at`), a cell per row.
    times: Vec<Vec<i64>>,
    time_values: Times,
    /// Per row: created_at (microseconds) for the range.
    created: Vec<i64>,
    /// The instance version each row holds (an older one never replaces it).
    versions: Vec<u64>,
    /// Per row, its instance's id as a number (see [`Ids`]).
    keys: Vec<u128>,
    /// Rows by their key: a table of row numbers only (4 bytes a row; the
    /// keys are read from `keys`), where a map of keys to rows took 32.
    index: RowIndex,
    ids: Ids,
}

/// A cell: a shared value, or a time (see [`FactTable::time_value`]).
pub enum Cell<'a> {
    Value(&'a Value),
    Time,
}

impl FactTable {
    pub fn new(columns: Vec<String>) -> FactTable {
        let (mut cells, mut times) = (0, 0);
        let slots: Vec<Place> = columns
            .iter()
            .map(|c| {
                if c.ends_with("_at") {
                    times += 1;
                    Place::Time(times - 1)
                } else {
                    cells += 1;
                    Place::Cell(cells - 1)
                }
            })
            .collect();
        let dictionaries = (0..cells)
            .map(|_| {
                // Cell 0 is null in every column.
                let mut d = Dictionary::default();
                d.id(&Value::Null);
                d
            })
            .collect();
        FactTable {
            columns,
            slots,
            dictionaries,
            cells: vec![Codes::U8(Vec::new()); cells],
            times: vec![Vec::new(); times],
            time_values: Times::default(),
            created: Vec::new(),
            versions: Vec::new(),
            keys: Vec::new(),
            index: RowIndex::default(),
            ids: Ids::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.created.len()
    }

    pub fn is_empty(&self) -> bool {
        self.created.is_empty()
    }

    /// The cell of column `c` in row `r`.
    pub fn cell(&self, r: usize, c: usize) -> Cell<'_> {
        match self.slots[c] {
            Place::Cell(k) => Cell::Value(&self.dictionaries[k].values[self.cells[k].get(r) as usize]),
            Place::Time(_) => Cell::Time,
        }
    }

    /// The value of time column `c` in row `r`, as it was read.
    pub fn time_value(&self, r: usize, c: usize) -> Value {
        match self.slots[c] {
            Place::Time(k) => self.time_values.value(self.times[k][r]),
            Place::Cell(_) => Value::Null,
        }
    }

    /// The instant of time column `c` in row `r`, in microseconds; `None`
    /// for no time, or for a column that is not a time column.
    pub fn micros(&self, r: usize, c: usize) -> Option<i64> {
        match self.slots[c] {
            Place::Time(k) => self.time_values.micros(self.times[k][r]),
            Place::Cell(_) => None,
        }
    }

    /// Whether column `c` keeps times.
    pub fn is_time(&self, c: usize) -> bool {
        matches!(self.slots[c], Place::Time(_))
    }

    /// The distinct values of column `c`; for a time column, at least the
    /// values that are not times (kept as they are: e.g. the record ids of a
    /// reference whose name ends in `_at`).
    pub fn distinct(&self, c: usize) -> &[Value] {
        match self.slots[c] {
            Place::Cell(k) => &self.dictionaries[k].values,
            Place::Time(_) => &self.time_values.odd,
        }
    }

    /// Row positions whose creation time (microseconds) is in `[from, to)`.
    pub fn range(&self, from: Option<i64>, to: Option<i64>) -> std::ops::Range<usize> {
        let lo = from.map_or(0, |f| self.created.partition_point(|t| *t < f));
        let hi = to.map_or(self.created.len(), |t| self.created.partition_point(|x| *x < t));
        lo..hi.max(lo)
    }

    /// The cells of an instance: the dictionary ids, the times. A row that
    /// exists keeps the cells whose value did not change.
    fn encode(&mut self, i: &Instance, existing: Option<usize>) -> (Vec<u32>, Vec<i64>) {
        let row = row_of(i);
        let mut cells = Vec::with_capacity(self.cells.len());
        let mut times = Vec::with_capacity(self.times.len());
        for (name, slot) in self.columns.iter().zip(&self.slots) {
            let v = row.get(name).unwrap_or(&Value::Null);
            match *slot {
                Place::Cell(k) => {
                    let d = &mut self.dictionaries[k];
                    match existing.map(|r| self.cells[k].get(r)) {
                        Some(old) if d.values[old as usize] == *v => cells.push(old),
                        _ => cells.push(d.id(v)),
                    }
                }
                Place::Time(k) => match existing.map(|r| self.times[k][r]) {
                    Some(old) if self.time_values.holds(old, v) => times.push(old),
                    _ => times.push(self.time_values.encode(v)),
                },
            }
        }
        (cells, times)
    }

    /// Appends an instance read newest first (see [`FactTable::reverse`]).
    pub fn append_newest_first(&mut self, i: &Instance) {
        let (cells, times) = self.encode(i, None);
        self.created.push(created_micros(i));
        self.versions.push(i.version);
        for (column, id) in self.cells.iter_mut().zip(cells) {
            column.push(id);
        }
        for (column, t) in self.times.iter_mut().zip(times) {
            column.push(t);
        }
        let key = self.ids.key(&i.id);
        self.keys.push(key);
        self.index.insert(&self.keys, key, (self.created.len() - 1) as u32);
    }

    /// Puts the rows in the order `order` gives (new position → old position).
    fn reorder(&mut self, order: &[usize]) {
        self.created = order.iter().map(|&r| self.created[r]).collect();
        self.versions = order.iter().map(|&r| self.versions[r]).collect();
        for column in &mut self.cells {
            *column = column.reordered(order);
        }
        for column in &mut self.times {
            *column = order.iter().map(|&r| column[r]).collect();
        }
        self.keys = order.iter().map(|&r| self.keys[r]).collect();
        let mut position = vec![0u32; order.len()];
        for (new, &old) in order.iter().enumerate() {
            position[old] = new as u32;
        }
        self.index.renumber(|r| position[r as usize]);
    }

    /// After appending newest first: the rows in creation order, each
    /// column reversed in place (a copy of every column at once was the
    /// peak of the server's memory while a million orders' facts were read),
    /// and the columns' spare capacity given back.
    pub fn reverse(&mut self) {
        let rows = self.created.len();
        self.created.reverse();
        self.versions.reverse();
        for column in &mut self.cells {
            column.reverse();
            column.shrink_to_fit();
        }
        for column in &mut self.times {
            column.reverse();
            column.shrink_to_fit();
        }
        self.keys.reverse();
        let last = rows.saturating_sub(1) as u32;
        self.index.renumber(|r| last - r);
        self.created.shrink_to_fit();
        self.versions.shrink_to_fit();
        self.keys.shrink_to_fit();
        // Ids that sort by time almost always are in order; any that are not are put in place.
        if !self.created.is_sorted() {
            let mut order: Vec<usize> = (0..rows).collect();
            order.sort_by_key(|&r| self.created[r]);
            self.reorder(&order);
        }
    }

    /// Adds or updates an instance's row.
    fn put(&mut self, i: &Instance) {
        let key = self.ids.key(&i.id);
        let existing = self.index.get(&self.keys, key).map(|r| r as usize);
        if existing.is_some_and(|r| self.versions[r] > i.version) {
            return;
        }
        let (cells, times) = self.encode(i, existing);
        match existing {
            Some(r) => {
                for (column, id) in self.cells.iter_mut().zip(cells) {
                    column.set(r, id);
                }
                for (column, t) in self.times.iter_mut().zip(times) {
                    column[r] = t;
                }
                self.versions[r] = i.version;
            }
            None => {
                let created = created_micros(i);
                // Almost always the newest: appended; otherwise inserted in order.
                let at = self.created.partition_point(|t| *t <= created);
                self.created.insert(at, created);
                self.versions.insert(at, i.version);
                for (column, id) in self.cells.iter_mut().zip(cells) {
                    column.insert(at, id);
                }
                for (column, t) in self.times.iter_mut().zip(times) {
                    column.insert(at, t);
                }
                self.keys.insert(at, key);
                if at + 1 < self.created.len() {
                    self.index.renumber(|r| if r as usize >= at { r + 1 } else { r });
                }
                self.index.insert(&self.keys, key, at as u32);
            }
        }
    }
}

fn created_micros(i: &Instance) -> i64 {
    i.created_at.timestamp().as_microsecond()
}

/// An instance as a report row (what `report_rows` gives for it).
pub fn row_of(i: &Instance) -> Map<String, Value> {
    let mut base = i.data.clone();
    for (k, v) in [
        ("id", json!(i.id)),
        ("number", json!(i.number)),
        ("state", json!(i.state)),
        ("team", json!(i.assignment.team)),
        ("assignee", json!(i.assignment.assignee)),
        ("vendor", json!(i.assignment.vendor)),
        ("requester", json!(i.requester)),
        ("created_at", json!(i.created_at)),
        ("updated_at", json!(i.updated_at)),
        ("workflow", json!(i.workflow)),
    ] {
        base.insert(k.into(), v);
    }
    base
}

/// Where a workflow's facts stand.
enum Slot {
    /// Being read from the store; the instances committed meanwhile wait here.
    Building(Vec<Instance>),
    Ready(Arc<RwLock<FactTable>>),
}

/// The fact tables of the runtime.
#[derive(Default)]
pub struct Facts {
    slots: Mutex<HashMap<String, Slot>>,
}

impl Facts {
    /// The ready table of `workflow` if it has every column in `needed`;
    /// `Err(true)` when one should be built (none, or one with other columns).
    pub fn table(&self, workflow: &str, needed: &[String]) -> Result<Arc<RwLock<FactTable>>, bool> {
        let slots = self.slots.lock().map_err(|_| false)?;
        match slots.get(workflow) {
            Some(Slot::Ready(t)) => {
                let has_all = t.read().is_ok_and(|t| needed.iter().all(|n| t.columns.contains(n)));
                if has_all { Ok(t.clone()) } else { Err(true) }
            }
            Some(Slot::Building(_)) => Err(false),
            None => Err(true),
        }
    }

    /// Marks `workflow` as being built; `false` if it already is.
    pub fn start_building(&self, workflow: &str) -> bool {
        let Ok(mut slots) = self.slots.lock() else { return false };
        if matches!(slots.get(workflow), Some(Slot::Building(_))) {
            return false;
        }
        slots.insert(workflow.to_string(), Slot::Building(Vec::new()));
        true
    }

    /// A table read from the store while commands went on: the instances
    /// committed meanwhile are applied last, each row keeping its newest version.
    pub fn install(&self, workflow: &str, mut t: FactTable) {
        if let Ok(mut slots) = self.slots.lock() {
            if let Some(Slot::Building(waiting)) = slots.get(workflow) {
                for i in waiting {
                    t.put(i);
                }
            }
            slots.insert(workflow.to_string(), Slot::Ready(Arc::new(RwLock::new(t))));
        }
    }

    /// A build that failed: the next report tries again.
    pub fn abandon(&self, workflow: &str) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.remove(workflow);
        }
    }

    /// Whether any table is kept (commands then note what they changed).
    pub fn any(&self) -> bool {
        self.slots.lock().is_ok_and(|s| !s.is_empty())
    }

    /// A committed instance: its row changes in its workflow's table.
    pub fn note(&self, i: &Instance) {
        let table = match self.slots.lock() {
            Ok(mut slots) => match slots.get_mut(&i.workflow) {
                Some(Slot::Ready(t)) => t.clone(),
                Some(Slot::Building(waiting)) => {
                    waiting.push(i.clone());
                    return;
                }
                None => return,
            },
            Err(_) => return,
        };
        if let Ok(mut t) = table.write() {
            t.put(i);
        }
    }
}

/// The events of one transition of a workflow (or of all), as rows: when,
/// by whom, which transition, on which instance; every other field is the
/// instance's (read from the workflow's fact table). 32 bytes an event.
#[derive(Default)]
pub struct EventTable {
    /// Time cells (see [`Times`]), in time order.
    at: Vec<i64>,
    times: Times,
    actor: Vec<u32>,
    transition: Vec<u32>,
    instance: Vec<u128>,
    names: Dictionary,
    ids: Ids,
}

impl EventTable {
    /// Appends an event in any order (see [`EventTable::sort`]).
    pub fn append(&mut self, e: &flowform_core::Event) {
        let at = self.times.encode(&json!(e.at));
        let (actor, transition) = (self.names.id(&json!(e.actor)), self.names.id(&json!(e.transition)));
        let instance = self.ids.key(&e.instance_id);
        self.at.push(at);
        self.actor.push(actor);
        self.transition.push(transition);
        self.instance.push(instance);
    }

    fn micros_of(&self, r: usize) -> i64 {
        self.times.micros(self.at[r]).unwrap_or(i64::MIN)
    }

    /// After appending: the rows in time order (each column copied once,
    /// in turn, and without spare capacity).
    pub fn sort(&mut self) {
        let mut order: Vec<u32> = (0..self.at.len() as u32).collect();
        order.sort_by_key(|&r| self.micros_of(r as usize));
        fn gather<T: Copy>(column: &mut Vec<T>, order: &[u32]) {
            *column = order.iter().map(|&r| column[r as usize]).collect();
        }
        gather(&mut self.at, &order);
        gather(&mut self.actor, &order);
        gather(&mut self.transition, &order);
        gather(&mut self.instance, &order);
    }

    /// Whether it holds an event of the same instance at the same time.
    fn has(&self, e: &flowform_core::Event) -> bool {
        let Some(us) = flowform_core::reports::micros(&json!(e.at)) else { return false };
        let Some(key) = self.ids.find(&e.instance_id) else { return false };
        let at = json!(e.at);
        self.range(Some(us), Some(us + 1)).any(|r| self.instance[r] == key && self.times.holds(self.at[r], &at))
    }

    fn push(&mut self, e: &flowform_core::Event) {
        let cell = self.times.encode(&json!(e.at));
        let us = self.times.micros(cell).unwrap_or(i64::MIN);
        let actor = self.names.id(&json!(e.actor));
        let transition = self.names.id(&json!(e.transition));
        let instance = self.ids.key(&e.instance_id);
        let at = self.partition(|t| t <= us);
        self.at.insert(at, cell);
        self.actor.insert(at, actor);
        self.transition.insert(at, transition);
        self.instance.insert(at, instance);
    }

    fn partition(&self, below: impl Fn(i64) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.at.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if below(self.micros_of(mid)) { lo = mid + 1 } else { hi = mid }
        }
        lo
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Rows whose time (microseconds) is in `[from, to)`.
    pub fn range(&self, from: Option<i64>, to: Option<i64>) -> std::ops::Range<usize> {
        let lo = from.map_or(0, |f| self.partition(|t| t < f));
        let hi = to.map_or(self.at.len(), |t| self.partition(|x| x < t));
        lo..hi.max(lo)
    }

    /// `actor` or `transition` of row `r`.
    pub fn name(&self, r: usize, name: &str) -> Option<&Value> {
        match name {
            "actor" => Some(&self.names.values[self.actor[r] as usize]),
            "transition" => Some(&self.names.values[self.transition[r] as usize]),
            _ => None,
        }
    }

    /// The time of row `r` as it was read.
    pub fn at_value(&self, r: usize) -> Value {
        self.times.value(self.at[r])
    }

    /// The time of row `r`, in microseconds.
    pub fn at_micros(&self, r: usize) -> Option<i64> {
        self.times.micros(self.at[r])
    }

    /// The number of the instance of row `r` (equal for equal ids within this table).
    pub fn instance_key(&self, r: usize) -> u128 {
        self.instance[r]
    }

    /// The instance id of row `r`.
    pub fn instance_id(&self, r: usize) -> String {
        self.ids.text(self.instance[r])
    }
}

impl FactTable {
    /// The row of instance `id`, if the table has it.
    pub fn row_of_id(&self, id: &str) -> Option<usize> {
        self.index.get(&self.keys, self.ids.find(id)?).map(|r| r as usize)
    }

    /// The row of the instance of event row `r`.
    pub fn row_of_event(&self, e: &EventTable, r: usize) -> Option<usize> {
        let key = e.instance[r];
        if Ids::is_ulid(key) { self.index.get(&self.keys, key).map(|r| r as usize) } else { self.row_of_id(&e.instance_id(r)) }
    }
}

enum EventSlot {
    Building(Vec<flowform_core::Event>),
    Ready(Arc<RwLock<EventTable>>),
}

/// Event tables, keyed by `workflow/transition` (`workflow/*` for every event).
#[derive(Default)]
pub struct EventFacts {
    slots: Mutex<HashMap<String, EventSlot>>,
}

impl EventFacts {
    pub fn key(workflow: &str, transition: Option<&str>) -> String {
        format!("{workflow}/{}", transition.unwrap_or("*"))
    }

    pub fn table(&self, key: &str) -> Result<Arc<RwLock<EventTable>>, bool> {
        let slots = self.slots.lock().map_err(|_| false)?;
        match slots.get(key) {
            Some(EventSlot::Ready(t)) => Ok(t.clone()),
            Some(EventSlot::Building(_)) => Err(false),
            None => Err(true),
        }
    }

    pub fn start_building(&self, key: &str) -> bool {
        let Ok(mut slots) = self.slots.lock() else { return false };
        if slots.contains_key(key) {
            return false;
        }
        slots.insert(key.to_string(), EventSlot::Building(Vec::new()));
        true
    }

    /// A table read from the store (sorted): the events committed meanwhile
    /// are added unless it has them already (the same instance and time).
    pub fn install(&self, key: &str, mut t: EventTable) {
        let Ok(mut slots) = self.slots.lock() else { return };
        if let Some(EventSlot::Building(waiting)) = slots.get(key) {
            for e in waiting {
                if !t.has(e) {
                    t.push(e);
                }
            }
        }
        slots.insert(key.to_string(), EventSlot::Ready(Arc::new(RwLock::new(t))));
    }

    pub fn abandon(&self, key: &str) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.remove(key);
        }
    }

    pub fn any(&self) -> bool {
        self.slots.lock().is_ok_and(|s| !s.is_empty())
    }

    /// A committed event joins the tables it belongs to.
    pub fn note(&self, workflow: &str, e: &flowform_core::Event) {
        let Ok(mut slots) = self.slots.lock() else { return };
        for key in [Self::key(workflow, e.transition.as_deref()), Self::key(workflow, None)] {
            match slots.get_mut(&key) {
                Some(EventSlot::Ready(t)) => {
                    if let Ok(mut t) = t.write() {
                        t.push(e);
                    }
                }
                Some(EventSlot::Building(waiting)) => waiting.push(e.clone()),
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_cells_give_back_the_text_they_were_read_from() {
        let mut times = Times::default();
        for v in [
            json!("2026-11-25T05:00:00.000Z"),
            json!("2026-11-25T05:00:00.123Z"),
            json!("2026-11-25T05:00:00Z"),
            json!("1969-12-31T23:59:59.999Z"),
            // Not in a form kept as a number: kept as it is.
            json!("2026-11-25T13:00:00+08:00"),
            json!("2026-11-25T05:00:00.123456Z"),
            json!("not a time"),
            json!(42),
            Value::Null,
        ] {
            let c = times.encode(&v);
            assert_eq!(times.value(c), v, "{v}");
            assert!(times.holds(c, &v), "{v}");
            assert_eq!(times.micros(c), flowform_core::reports::micros(&v), "{v}");
        }
        assert_eq!(times.odd.len(), 4, "only the four values in no kept form are kept as they are");
        let again = times.encode(&json!("not a time"));
        assert_eq!((times.odd.len(), times.value(again)), (4, json!("not a time")), "an odd value is kept once");
        let c = times.encode(&json!("2026-11-25T05:00:00.000Z"));
        assert!(!times.holds(c, &json!("2026-11-25T05:00:00Z")), "the same instant in another form is another text");
    }

    #[test]
    fn every_id_finds_its_row_after_inserts_anywhere() {
        let mut t = FactTable::new(vec!["created_at".into(), "n".into()]);
        let mut seed: u64 = 7;
        let mut next = || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            seed >> 33
        };
        let mut ids = Vec::new();
        for k in 0..3000u64 {
            // ULIDs and other ids, created at random times (most rows go in the middle).
            let id = if k % 3 == 0 { format!("order-{k}") } else { ulid::Ulid::from_parts(1_790_000_000_000 + k, next() as u128).to_string() };
            let created = jiff::Timestamp::from_second(1_790_000_000 + (next() % 1_000_000) as i64).unwrap();
            t.put(&instance(&id, &format!("{created:.3}"), 1, "open"));
            ids.push((id, format!("{created:.3}")));
        }
        assert!(t.created.is_sorted());
        for (id, created) in &ids {
            let row = t.row_of_id(id).unwrap_or_else(|| panic!("{id} has no row"));
            assert_eq!(t.time_value(row, 0), json!(created), "{id}");
        }
        assert_eq!(t.row_of_id("order-x"), None);
    }

    #[test]
    fn dictionary_ids_widen_as_the_dictionary_grows() {
        let mut codes = Codes::U8(Vec::new());
        codes.push(7);
        codes.push(255);
        assert!(matches!(codes, Codes::U8(_)));
        codes.insert(1, 256);
        assert!(matches!(codes, Codes::U16(_)));
        codes.set(0, 70_000);
        assert!(matches!(codes, Codes::U32(_)));
        assert_eq!((0..codes.len()).map(|r| codes.get(r)).collect::<Vec<_>>(), vec![70_000, 256, 255]);
        let mut small = Codes::U8(vec![1, 2, 3]);
        small.set(2, 65_536);
        assert_eq!((0..3).map(|r| small.get(r)).collect::<Vec<_>>(), vec![1, 2, 65_536], "two steps at once");
        assert_eq!(small.reordered(&[2, 0]).get(0), 65_536);
    }

    #[test]
    fn ids_are_numbers_and_come_back_as_text() {
        let mut ids = Ids::default();
        let ulid = "01M8KGEHFV000000000000YGA6";
        let k = ids.key(ulid);
        assert!(Ids::is_ulid(k));
        assert_eq!(ids.text(k), ulid);
        for other in ["01m8kgehfv000000000000yga6", "order-7", "", "ZZZZZZZZZZZZZZZZZZZZZZZZZZ", "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"] {
            let k = ids.key(other);
            assert!(!Ids::is_ulid(k), "{other}");
            assert_eq!(ids.text(k), other);
            assert_eq!(ids.find(other), Some(k));
            assert_eq!(ids.key(other), k, "numbered once");
        }
        assert_eq!(ids.find("never-seen"), None);
    }

    fn instance(id: &str, created: &str, version: u64, state: &str) -> Instance {
        let mut i: Instance = serde_json::from_value(json!({
            "id": id, "workflow": "w", "state": state, "version": version,
            "created_at": created, "updated_at": created, "data": {"closed_at": created, "n": version},
            "assignment": {}, "requester": "u", "bundle_version": "v"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        i.created_at = flowform_core::time::tm(created);
        i
    }

    #[test]
    fn rows_stay_in_creation_order_and_keep_their_newest_version() {
        let mut t = FactTable::new(vec!["created_at".into(), "state".into(), "closed_at".into(), "n".into()]);
        // Read newest first, one out of order.
        t.append_newest_first(&instance("c", "2026-11-25T03:00:00.000Z", 1, "open"));
        t.append_newest_first(&instance("a", "2026-11-25T01:00:00.000Z", 1, "open"));
        t.append_newest_first(&instance("b", "2026-11-25T02:00:00.000Z", 1, "open"));
        t.reverse();
        let order = |t: &FactTable| (0..t.len()).map(|r| t.time_value(r, 0)).collect::<Vec<_>>();
        assert_eq!(order(&t), vec![json!("2026-11-25T01:00:00.000Z"), json!("2026-11-25T02:00:00.000Z"), json!("2026-11-25T03:00:00.000Z")]);
        // Inserted between, updated, an older version ignored.
        t.put(&instance("ab", "2026-11-25T01:30:00.000Z", 1, "open"));
        t.put(&instance("c", "2026-11-25T03:00:00.000Z", 3, "closed"));
        t.put(&instance("c", "2026-11-25T03:00:00.000Z", 2, "open"));
        let states: Vec<Value> = (0..t.len())
            .map(|r| match t.cell(r, 1) {
                Cell::Value(v) => v.clone(),
                Cell::Time => Value::Null,
            })
            .collect();
        assert_eq!(states, vec![json!("open"), json!("open"), json!("open"), json!("closed")]);
        for (id, row) in [("a", 0), ("ab", 1), ("b", 2), ("c", 3)] {
            assert_eq!(t.row_of_id(id), Some(row), "{id}");
        }
        assert_eq!(t.range(Some(jiff::Timestamp::from_second(1_800_000_000).unwrap().as_microsecond()), None), 4..4);
        let t0 = "2026-11-25T01:30:00Z".parse::<jiff::Timestamp>().unwrap().as_microsecond();
        assert_eq!(t.range(Some(t0), Some(t0 + 1)), 1..2);
        assert_eq!(t.micros(3, 2), Some("2026-11-25T03:00:00Z".parse::<jiff::Timestamp>().unwrap().as_microsecond()));
        assert_eq!(t.micros(3, 1), None, "state is no time column");
    }
}
