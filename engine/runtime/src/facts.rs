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
use std::sync::{Arc, Mutex, RwLock};

/// One column's distinct values. A column of times (`*_at`), nearly one
/// value a row, keeps its values without an index (an index would double them).
#[derive(Default)]
struct Dictionary {
    values: Vec<Value>,
    index: HashMap<String, u32>,
    plain: bool,
}

impl Dictionary {
    fn id(&mut self, v: &Value) -> u32 {
        if self.plain && !v.is_null() {
            self.values.push(v.clone());
            return (self.values.len() - 1) as u32;
        }
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

/// The facts of one workflow.
pub struct FactTable {
    /// Column names, in cell order.
    pub columns: Vec<String>,
    dictionaries: Vec<Dictionary>,
    /// Per row: created_at (seconds) for the range, and the cells.
    created: Vec<i64>,
    /// The instance version each row holds (an older one never replaces it).
    versions: Vec<u64>,
    cells: Vec<u32>,
    rows_by_id: HashMap<String, usize>,
}

impl FactTable {
    pub fn new(columns: Vec<String>) -> FactTable {
        let dictionaries = columns.iter().map(|c| Dictionary { plain: c.ends_with("_at"), ..Dictionary::default() }).collect();
        let mut t = FactTable { columns, dictionaries, created: Vec::new(), versions: Vec::new(), cells: Vec::new(), rows_by_id: HashMap::new() };
        for d in &mut t.dictionaries {
            // Cell 0 is null in every column.
            d.values.push(Value::Null);
            d.index.insert(Value::Null.to_string(), 0);
        }
        t
    }

    pub fn len(&self) -> usize {
        self.created.len()
    }

    pub fn is_empty(&self) -> bool {
        self.created.is_empty()
    }

    /// The value of column `c` in row `r`.
    pub fn cell(&self, r: usize, c: usize) -> &Value {
        &self.dictionaries[c].values[self.cells[r * self.columns.len() + c] as usize]
    }

    /// The distinct values of column `c`.
    pub fn distinct(&self, c: usize) -> &[Value] {
        &self.dictionaries[c].values
    }

    /// Row positions whose creation time is in `[from, to)`.
    pub fn range(&self, from: Option<i64>, to: Option<i64>) -> std::ops::Range<usize> {
        let lo = from.map_or(0, |f| self.created.partition_point(|t| *t < f));
        let hi = to.map_or(self.created.len(), |t| self.created.partition_point(|x| *x < t));
        lo..hi.max(lo)
    }

    /// Appends an instance read newest first (see [`FactTable::reverse`]).
    pub fn append_newest_first(&mut self, i: &Instance) {
        let row = row_of(i);
        let cells: Vec<u32> = self.columns.iter().zip(self.dictionaries.iter_mut()).map(|(c, d)| d.id(row.get(c).unwrap_or(&Value::Null))).collect();
        self.created.push(i.created_at.parse::<jiff::Timestamp>().map_or(0, |t| t.as_second()));
        self.versions.push(i.version);
        self.cells.extend(cells);
        self.rows_by_id.insert(i.id.clone(), self.created.len() - 1);
    }

    /// After appending newest first: the rows in creation order.
    pub fn reverse(&mut self) {
        let n = self.columns.len().max(1);
        let rows = self.created.len();
        self.created.reverse();
        self.versions.reverse();
        let mut cells = Vec::with_capacity(self.cells.len());
        for r in (0..rows).rev() {
            cells.extend_from_slice(&self.cells[r * n..(r + 1) * n]);
        }
        self.cells = cells;
        for r in self.rows_by_id.values_mut() {
            *r = rows - 1 - *r;
        }
        // Ids that sort by time almost always are in order; any that are not are put in place.
        if !self.created.is_sorted() {
            let mut order: Vec<usize> = (0..rows).collect();
            order.sort_by_key(|&r| self.created[r]);
            let created = order.iter().map(|&r| self.created[r]).collect();
            let versions = order.iter().map(|&r| self.versions[r]).collect();
            let cells = order.iter().flat_map(|&r| self.cells[r * n..(r + 1) * n].to_vec()).collect();
            let mut position = vec![0; rows];
            for (new, &old) in order.iter().enumerate() {
                position[old] = new;
            }
            for r in self.rows_by_id.values_mut() {
                *r = position[*r];
            }
            (self.created, self.versions, self.cells) = (created, versions, cells);
        }
    }

    /// Adds or updates an instance's row.
    fn put(&mut self, i: &Instance) {
        let row = row_of(i);
        let n = self.columns.len();
        let existing = self.rows_by_id.get(&i.id).copied();
        let mut cells: Vec<u32> = Vec::with_capacity(n);
        for (c, (name, d)) in self.columns.iter().zip(self.dictionaries.iter_mut()).enumerate() {
            let v = row.get(name).unwrap_or(&Value::Null);
            // An unchanged time keeps its cell (a plain column would otherwise grow with every update).
            match existing.map(|r| self.cells[r * n + c]) {
                Some(old) if &d.values[old as usize] == v => cells.push(old),
                _ => cells.push(d.id(v)),
            }
        }
        match self.rows_by_id.get(&i.id) {
            Some(&r) if self.versions[r] > i.version => {}
            Some(&r) => {
                self.cells[r * n..(r + 1) * n].copy_from_slice(&cells);
                self.versions[r] = i.version;
            }
            None => {
                let created = i.created_at.parse::<jiff::Timestamp>().map_or(0, |t| t.as_second());
                // Almost always the newest: appended; otherwise inserted in order.
                let at = self.created.partition_point(|t| *t <= created);
                if at == self.created.len() {
                    self.created.push(created);
                    self.versions.push(i.version);
                    self.cells.extend(cells);
                    self.rows_by_id.insert(i.id.clone(), at);
                } else {
                    self.created.insert(at, created);
                    self.versions.insert(at, i.version);
                    self.cells.splice(at * n..at * n, cells);
                    for r in self.rows_by_id.values_mut() {
                        if *r >= at {
                            *r += 1;
                        }
                    }
                    self.rows_by_id.insert(i.id.clone(), at);
                }
            }
        }
    }
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
/// instance's (read from the workflow's fact table).
#[derive(Default)]
pub struct EventTable {
    seconds: Vec<i64>,
    at: Vec<Value>,
    actor: Vec<u32>,
    transition: Vec<u32>,
    /// Nearly one a row: kept as values, without an index.
    instance: Vec<Value>,
    names: Dictionary,
}

impl EventTable {
    /// Appends an event in any order (see [`EventTable::sort`]).
    pub fn append(&mut self, e: &flowform_core::Event) {
        self.seconds.push(e.at.parse::<jiff::Timestamp>().map_or(0, |t| t.as_second()));
        self.at.push(json!(e.at));
        let (actor, transition) = (self.names.id(&json!(e.actor)), self.names.id(&json!(e.transition)));
        self.actor.push(actor);
        self.transition.push(transition);
        self.instance.push(json!(e.instance_id));
    }

    /// After appending: the rows in time order.
    pub fn sort(&mut self) {
        let mut order: Vec<usize> = (0..self.seconds.len()).collect();
        order.sort_by_key(|&r| self.seconds[r]);
        self.seconds = order.iter().map(|&r| self.seconds[r]).collect();
        self.at = order.iter().map(|&r| std::mem::take(&mut self.at[r])).collect();
        self.actor = order.iter().map(|&r| self.actor[r]).collect();
        self.transition = order.iter().map(|&r| self.transition[r]).collect();
        self.instance = order.iter().map(|&r| std::mem::take(&mut self.instance[r])).collect();
    }

    /// Whether it holds the event `seq` of instance `id` at `at`.
    fn has(&self, e: &flowform_core::Event) -> bool {
        let seconds = e.at.parse::<jiff::Timestamp>().map_or(0, |t| t.as_second());
        let range = self.range(Some(seconds), Some(seconds + 1));
        range.into_iter().any(|r| self.at[r] == json!(e.at) && self.instance[r] == json!(e.instance_id))
    }

    fn push(&mut self, e: &flowform_core::Event) {
        let seconds = e.at.parse::<jiff::Timestamp>().map_or(0, |t| t.as_second());
        let actor = self.names.id(&json!(e.actor));
        let transition = self.names.id(&json!(e.transition));
        let instance = json!(e.instance_id);
        let at = self.seconds.partition_point(|t| *t <= seconds);
        self.seconds.insert(at, seconds);
        self.at.insert(at, json!(e.at));
        self.actor.insert(at, actor);
        self.transition.insert(at, transition);
        self.instance.insert(at, instance);
    }

    pub fn len(&self) -> usize {
        self.seconds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seconds.is_empty()
    }

    /// Rows whose time is in `[from, to)`.
    pub fn range(&self, from: Option<i64>, to: Option<i64>) -> std::ops::Range<usize> {
        let lo = from.map_or(0, |f| self.seconds.partition_point(|t| *t < f));
        let hi = to.map_or(self.seconds.len(), |t| self.seconds.partition_point(|x| *x < t));
        lo..hi.max(lo)
    }

    /// `at`, `actor`, `transition` or `instance` of row `r`.
    pub fn own(&self, r: usize, name: &str) -> Option<&Value> {
        match name {
            "at" => Some(&self.at[r]),
            "actor" => Some(&self.names.values[self.actor[r] as usize]),
            "transition" => Some(&self.names.values[self.transition[r] as usize]),
            "instance" => Some(&self.instance[r]),
            _ => None,
        }
    }
}

impl FactTable {
    /// The row of instance `id`, if the table has it.
    pub fn row_of_id(&self, id: &str) -> Option<usize> {
        self.rows_by_id.get(id).copied()
    }

    /// Every instance id the table holds.
    pub fn ids(&self) -> Vec<String> {
        self.rows_by_id.keys().cloned().collect()
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
