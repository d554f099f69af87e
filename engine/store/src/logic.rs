//! Every rule of the store, written once against the key-value traits.

use crate::tables::{Read, SEP, Table, Write, event_key, key, num, prefix_range};
use crate::*;
use flowform_core::Time;
use flowform_core::ledger::{Balance, balance_key, deltas};
use flowform_core::timers::TimerSpec;
use std::collections::HashMap;
use std::ops::Bound::{Excluded, Included, Unbounded};
use std::sync::Arc;

pub(crate) fn get<T: for<'de> Deserialize<'de>>(r: &dyn Read, table: Table, k: &str, what: &str) -> Result<Option<T>> {
    r.get(table, k)?.map(|b| from_bytes(what, &b)).transpose()
}

fn collect_prefix<T: for<'de> Deserialize<'de>>(r: &dyn Read, table: Table, prefix: &str, what: &str) -> Result<Vec<T>> {
    let (lo, hi) = prefix_range(prefix);
    let mut out = Vec::new();
    r.range(table, Included(&lo), Excluded(&hi), false, &mut |_, v| {
        out.push(from_bytes(what, v)?);
        Ok(true)
    })?;
    Ok(out)
}

fn keys_with_prefix(r: &dyn Read, table: Table, prefix: &str) -> Result<Vec<String>> {
    let (lo, hi) = prefix_range(prefix);
    let mut out = Vec::new();
    r.range(table, Included(&lo), Excluded(&hi), false, &mut |k, _| {
        out.push(k.to_string());
        Ok(true)
    })?;
    Ok(out)
}

// ---- reads ----

/// Every value of a (small) table, in key order.
pub(crate) fn all<T: for<'de> Deserialize<'de>>(r: &dyn Read, table: Table, what: &str) -> Result<Vec<T>> {
    let mut out = Vec::new();
    r.range(table, Unbounded, Unbounded, false, &mut |_, v| {
        out.push(from_bytes(what, v)?);
        Ok(true)
    })?;
    Ok(out)
}

/// How much one prune job deletes at most, so a first prune of a large store
/// does not make one huge transaction (the next day goes on).
const PRUNE_BATCH: usize = 10_000;

/// Deletes what the retention settings let go (see [`Job::Prune`]).
fn prune(w: &mut dyn Write, before: &PruneBefore, ledger_events_upto: u64) -> Result<CommitOutcome> {
    // Outbox and ledger events are in time order (by seq): the scan stops at
    // the first entry newer than the cut-off. Idempotency keys are not: they
    // are read a bounded slice per job, from where the last job stopped.
    // Entries that cannot be read are left alone (and do not stop the rest).
    let mut doomed: Vec<(Table, String)> = Vec::new();
    if let Some(cutoff) = &before.outbox {
        w.range(Table::Outbox, Unbounded, Unbounded, false, &mut |k, v| {
            let Ok(item) = from_bytes::<OutboxItem>("outbox item", v) else { return Ok(true) };
            if item.created_at >= *cutoff {
                return Ok(false);
            }
            if item.status == "delivered" {
                doomed.push((Table::Outbox, k.to_string()));
            }
            Ok(doomed.len() < PRUNE_BATCH)
        })?;
    }
    if let Some(cutoff) = &before.ledger_events {
        // Only events already notified: the marker says up to which seq.
        let hi = num(ledger_events_upto.saturating_add(1));
        w.range(Table::LedgerEvents, Unbounded, Excluded(&hi), false, &mut |k, v| {
            let Ok(e) = from_bytes::<LedgerEvent>("ledger event", v) else { return Ok(true) };
            if e.at >= *cutoff {
                return Ok(false);
            }
            doomed.push((Table::LedgerEvents, k.to_string()));
            Ok(doomed.len() < PRUNE_BATCH)
        })?;
    }
    let mut more = doomed.len() >= PRUNE_BATCH;
    if let Some(cutoff) = &before.idempotency {
        const SLICE: usize = 50_000;
        let after = w.get(Table::Meta, "prune_idempotency_after")?.map(|v| String::from_utf8_lossy(&v).to_string());
        let mut scanned = 0;
        let mut last: Option<String> = None;
        w.range(Table::Idempotency, after.as_deref().map_or(Unbounded, Excluded), Unbounded, false, &mut |k, v| {
            scanned += 1;
            last = Some(k.to_string());
            if let Ok(r) = from_bytes::<IdempotentResult>("idempotency record", v)
                && r.at.is_some_and(|at| at < *cutoff)
            {
                doomed.push((Table::Idempotency, k.to_string()));
            }
            Ok(scanned < SLICE && doomed.len() < PRUNE_BATCH)
        })?;
        match last {
            Some(last) if scanned >= SLICE || doomed.len() >= PRUNE_BATCH => {
                w.put(Table::Meta, "prune_idempotency_after", last.as_bytes())?;
                more = true;
            }
            _ => w.delete(Table::Meta, "prune_idempotency_after")?,
        }
    }
    let n = doomed.len() as u64;
    for (table, k) in doomed {
        w.delete(table, &k)?;
    }
    // `PRUNE_BATCH` or more: there may be more to do (the runtime runs another job).
    Ok(CommitOutcome::Sequence(if more { n.max(PRUNE_BATCH as u64) } else { n }))
}

/// Security events, newest first.
pub(crate) fn audit(r: &dyn Read, before: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>> {
    let hi = before.map(num);
    let mut out = Vec::new();
    r.range(Table::Audit, Unbounded, hi.as_deref().map_or(Unbounded, Excluded), true, &mut |_, v| {
        out.push(from_bytes("audit entry", v)?);
        Ok(out.len() < limit)
    })?;
    Ok(out)
}

fn apply_auth(w: &mut dyn Write, ops: &[AuthOp], audit: &[AuditEntry]) -> Result<CommitOutcome> {
    for op in ops {
        match op {
            AuthOp::PutUser(u) => w.put(Table::Users, &u.id, &to_bytes(u)?)?,
            AuthOp::PutToken(t) => w.put(Table::Tokens, &t.hash, &to_bytes(t)?)?,
            AuthOp::PutSession(sn) => w.put(Table::Sessions, &sn.hash, &to_bytes(sn)?)?,
            AuthOp::DeleteSession(hash) => w.delete(Table::Sessions, hash)?,
            AuthOp::TouchSession { hash, seen_at } => {
                if let Some(mut session) = get::<SessionRecord>(w, Table::Sessions, hash, "session")? {
                    session.seen_at = *seen_at;
                    w.put(Table::Sessions, hash, &to_bytes(&session)?)?;
                }
            }
            AuthOp::DeleteSessionsOf(user) => {
                let mut hashes = Vec::new();
                w.range(Table::Sessions, Unbounded, Unbounded, false, &mut |k, v| {
                    if from_bytes::<SessionRecord>("session", v)?.user == *user {
                        hashes.push(k.to_string());
                    }
                    Ok(true)
                })?;
                for h in hashes {
                    w.delete(Table::Sessions, &h)?;
                }
            }
        }
    }
    if !audit.is_empty() {
        let mut seq = 0;
        w.range(Table::Audit, Unbounded, Unbounded, true, &mut |k, _| {
            seq = k.parse().unwrap_or(0);
            Ok(false)
        })?;
        for entry in audit {
            seq += 1;
            let mut entry = entry.clone();
            entry.seq = seq;
            w.put(Table::Audit, &num(seq), &to_bytes(&entry)?)?;
        }
    }
    Ok(CommitOutcome::Committed)
}

pub fn instance(r: &dyn Read, id: &str) -> Result<Option<Instance>> {
    Ok(r.read_instance(id)?.map(Arc::unwrap_or_clone))
}

/// A page of instances, newest first. With a workflow, state, team or assignee
/// filter the index narrows the scan; other filters are checked on each
/// instance. With a restricted [`Visibility`] the page is merged from the
/// user's own index entries (requester, assignee, each team), newest first.
pub fn instances(r: &dyn Read, filter: &InstanceFilter) -> Result<Page> {
    if let Some(v) = &filter.visibility
        && !v.sees_all(filter.workflow.as_deref())
    {
        return instances_merged(r, filter, v);
    }
    let limit = filter.limit.clamp(1, 500);
    let mut items = Vec::new();
    let (table, prefix) = match index_prefix(filter) {
        Some(p) => (Table::InstanceIndex, Some(p)),
        None => (Table::Instances, None),
    };
    let lo = prefix.as_ref().map(|p| prefix_range(p).0);
    let mut hi = match (&prefix, &filter.before) {
        (Some(p), Some(b)) => Some(key(&[p, b])),
        (Some(p), None) => Some(prefix_range(p).1),
        (None, before) => before.clone(),
    };
    // Ids in chunks, then the instances: a range callback must not read the store again.
    const CHUNK: usize = 256;
    loop {
        let mut ids: Vec<String> = Vec::with_capacity(CHUNK);
        let mut last = None;
        let lo_bound = lo.as_deref().map_or(Unbounded, Included);
        let hi_bound = hi.as_deref().map_or(Unbounded, Excluded);
        r.range(table, lo_bound, hi_bound, true, &mut |k, _| {
            ids.push(lo.as_ref().map_or(k, |lo| &k[lo.len()..]).to_string());
            last = Some(k.to_string());
            Ok(ids.len() < CHUNK)
        })?;
        for id in &ids {
            if let Some(i) = instance(r, id)?
                && filter.matches(&i)
                && filter.visibility.as_ref().is_none_or(|v| v.allows(&i))
            {
                items.push(i);
                if items.len() > limit {
                    break;
                }
            }
        }
        if items.len() > limit || ids.len() < CHUNK {
            break;
        }
        hi = last;
    }
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|i| i.id.clone())
    } else {
        None
    };
    Ok(Page { items, next })
}

/// The index prefixes of what a restricted user may read, as narrow as the
/// filter allows (a team's entries of one workflow and state, say).
fn visible_prefixes(v: &Visibility, f: &InstanceFilter) -> Vec<String> {
    let any = |pred: fn(&Reach) -> bool| v.workflows.iter().any(|(w, r)| pred(r) && f.workflow.as_ref().is_none_or(|fw| fw == w));
    let mut prefixes = Vec::new();
    if any(|r| r.requester) {
        prefixes.push(key(&["r", &v.user]));
    }
    if any(|r| r.assignee) {
        prefixes.push(key(&["a", &v.user]));
    }
    if any(|r| r.team) {
        for t in &v.teams {
            prefixes.push(match (f.workflow.as_deref(), f.state.as_deref()) {
                (Some(w), Some(s)) => key(&["wst", w, s, t]),
                (Some(w), None) => key(&["wt", w, t]),
                _ => key(&["t", t]),
            });
        }
    }
    if let Some(d) = &v.department
        && any(|r| r.department)
    {
        prefixes.push(key(&["d", d]));
    }
    // Workflows seen whole: their own prefix.
    for (w, _) in v.workflows.iter().filter(|(w, r)| r.all && f.workflow.as_ref().is_none_or(|fw| fw == *w)) {
        prefixes.push(match f.state.as_deref() {
            Some(s) => key(&["ws", w, s]),
            None => key(&["w", w]),
        });
    }
    prefixes
}

/// One index prefix read newest first, a chunk at a time.
struct Stream {
    prefix_len: usize,
    lo: String,
    hi: String,
    buffer: std::collections::VecDeque<String>,
    done: bool,
}

impl Stream {
    fn head(&mut self, r: &dyn Read) -> Result<Option<&String>> {
        if self.buffer.is_empty() && !self.done {
            let mut last = None;
            let (lo, hi, n) = (self.lo.clone(), self.hi.clone(), self.prefix_len);
            let buffer = &mut self.buffer;
            r.range(Table::InstanceIndex, Included(&lo), Excluded(&hi), true, &mut |k, _| {
                buffer.push_back(k[n..].to_string());
                last = Some(k.to_string());
                Ok(buffer.len() < 128)
            })?;
            match last {
                Some(k) if self.buffer.len() == 128 => self.hi = k,
                _ => self.done = true,
            }
        }
        Ok(self.buffer.front())
    }
}

fn instances_merged(r: &dyn Read, filter: &InstanceFilter, v: &Visibility) -> Result<Page> {
    let limit = filter.limit.clamp(1, 500);
    let mut streams: Vec<Stream> = visible_prefixes(v, filter)
        .into_iter()
        .map(|p| {
            let (lo, end) = prefix_range(&p);
            let hi = match &filter.before {
                Some(b) => key(&[&p, b]),
                None => end,
            };
            Stream { prefix_len: lo.len(), lo, hi, buffer: Default::default(), done: false }
        })
        .collect();
    let mut items = Vec::new();
    loop {
        // The newest id at the head of any stream; the same id may head several.
        let mut newest: Option<String> = None;
        for s in streams.iter_mut() {
            if let Some(id) = s.head(r)?
                && newest.as_ref().is_none_or(|n| id > n)
            {
                newest = Some(id.clone());
            }
        }
        let Some(id) = newest else { break };
        for s in streams.iter_mut() {
            if s.buffer.front() == Some(&id) {
                s.buffer.pop_front();
            }
        }
        if let Some(i) = instance(r, &id)?
            && filter.matches(&i)
            && v.allows(&i)
        {
            items.push(i);
            if items.len() > limit {
                break;
            }
        }
    }
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|i| i.id.clone())
    } else {
        None
    };
    Ok(Page { items, next })
}

/// Counts of what a restricted user may read (see [`Store::instance_counts_visible`]):
/// the kept counts of what the user sees whole (workflows by role, teams),
/// plus the user's own requests and assignments outside those, from the
/// per-user counts (requested + assigned − both). Reads counts only, never instances.
pub fn instance_counts_visible(r: &dyn Read, workflow: Option<&str>, v: &Visibility) -> Result<Vec<InstanceCount>> {
    if v.department.is_some() && v.workflows.values().any(|r| r.department) {
        return counts_by_reading(r, workflow, v);
    }
    let whole =
        |w: &str, team: Option<&str>| v.workflows.get(w).is_some_and(|reach| reach.all || (reach.team && team.is_some_and(|t| v.teams.iter().any(|x| x == t))));
    let mut totals: std::collections::BTreeMap<(String, String, Option<String>), i64> = std::collections::BTreeMap::new();
    for c in instance_counts(r, workflow)? {
        if whole(&c.workflow, c.team.as_deref()) {
            *totals.entry((c.workflow, c.state, c.team)).or_default() += c.count as i64;
        }
    }
    for kind in ["r", "a", "b"] {
        let prefix = match workflow {
            Some(w) => key(&[kind, &v.user, w]),
            None => key(&[kind, &v.user]),
        };
        let (lo, hi) = prefix_range(&prefix);
        let mut rows = Vec::new();
        r.range(Table::UserCounts, Included(&lo), Excluded(&hi), false, &mut |k, val| {
            rows.push((k.to_string(), String::from_utf8_lossy(val).to_string()));
            Ok(true)
        })?;
        for (k, val) in rows {
            let parts: Vec<&str> = k.split(SEP).collect();
            let [_, _, w, state, team] = parts[..] else { continue };
            let n: i64 = val.parse().map_err(|e: std::num::ParseIntError| StoreError::Corrupt { what: "user count".into(), detail: e.to_string() })?;
            let team = (!team.is_empty()).then(|| team.to_string());
            let Some(reach) = v.workflows.get(w) else { continue };
            if whole(w, team.as_deref()) {
                continue;
            }
            let sign = match kind {
                "r" if reach.requester => 1,
                "a" if reach.assignee => 1,
                // Requested by and assigned to the user: counted twice above.
                "b" if reach.requester && reach.assignee => -1,
                _ => continue,
            };
            *totals.entry((w.to_string(), state.to_string(), team)).or_default() += sign * n;
        }
    }
    Ok(totals.into_iter().filter(|(_, n)| *n > 0).map(|((workflow, state, team), n)| InstanceCount { workflow, state, team, count: n as u64 }).collect())
}

/// Counts of what a user sees through their department: read from the
/// merged index entries (each instance once), so the cost grows with what the
/// user may read, not with the store.
fn counts_by_reading(r: &dyn Read, workflow: Option<&str>, v: &Visibility) -> Result<Vec<InstanceCount>> {
    let mut totals: std::collections::BTreeMap<(String, String, Option<String>), u64> = std::collections::BTreeMap::new();
    let mut filter = InstanceFilter { workflow: workflow.map(str::to_string), limit: 500, visibility: Some(v.clone()), ..Default::default() };
    loop {
        let page = instances_merged(r, &filter, v)?;
        for i in &page.items {
            *totals.entry((i.workflow.clone(), i.state.clone(), i.assignment.team.clone())).or_default() += 1;
        }
        match page.next {
            Some(next) => filter.before = Some(next),
            None => break,
        }
    }
    Ok(totals.into_iter().map(|((workflow, state, team), count)| InstanceCount { workflow, state, team, count }).collect())
}

/// The per-user count keys of an instance (see [`Table::UserCounts`]).
fn user_count_keys(i: &Instance) -> Vec<String> {
    let team = i.assignment.team.as_deref().unwrap_or("");
    let mut keys = vec![key(&["r", &i.requester, &i.workflow, &i.state, team])];
    if let Some(a) = &i.assignment.assignee {
        keys.push(key(&["a", a, &i.workflow, &i.state, team]));
        if *a == i.requester {
            keys.push(key(&["b", a, &i.workflow, &i.state, team]));
        }
    }
    keys
}

fn add_user_count(w: &mut dyn Write, k: &str, delta: i64) -> Result<()> {
    let current = match w.get(Table::UserCounts, k)? {
        Some(v) => String::from_utf8_lossy(&v).parse::<i64>().map_err(|e| StoreError::Corrupt { what: "user count".into(), detail: e.to_string() })?,
        None => 0,
    };
    match current + delta {
        0 => w.delete(Table::UserCounts, k),
        n => w.put(Table::UserCounts, k, n.to_string().as_bytes()),
    }
}

/// How many instances are assigned to `user`, per workflow and state.
pub fn assigned_counts(r: &dyn Read, user: &str) -> Result<Vec<(String, String, u64)>> {
    let (lo, hi) = prefix_range(&key(&["a", user]));
    let mut out: Vec<(String, String, u64)> = Vec::new();
    r.range(Table::UserCounts, Included(lo.as_str()), Excluded(hi.as_str()), false, &mut |k, v| {
        let parts: Vec<&str> = k.split(SEP).collect();
        let n = String::from_utf8_lossy(v).parse::<u64>().unwrap_or(0);
        if let [_, _, workflow, state, ..] = parts.as_slice() {
            match out.iter_mut().find(|(w, s, _)| w == workflow && s == state) {
                Some(e) => e.2 += n,
                None => out.push((workflow.to_string(), state.to_string(), n)),
            }
        }
        Ok(true)
    })?;
    Ok(out)
}

/// The narrowest index prefix for the filter, if any applies.
fn index_prefix(f: &InstanceFilter) -> Option<String> {
    let (w, s, t) = (f.workflow.as_deref(), f.state.as_deref(), f.team.as_deref());
    Some(match (w, s, t, f.assignee.as_deref()) {
        (_, _, _, Some(a)) => key(&["a", a]),
        (Some(w), Some(s), Some(t), None) => key(&["wst", w, s, t]),
        (Some(w), Some(s), None, None) => key(&["ws", w, s]),
        (Some(w), None, Some(t), None) => key(&["wt", w, t]),
        (Some(w), None, None, None) => key(&["w", w]),
        (None, _, Some(t), None) => key(&["t", t]),
        _ => return None,
    })
}

/// The index entries of an instance (see [`Table::InstanceIndex`]).
fn index_keys(i: &Instance) -> Vec<String> {
    let team = i.assignment.team.as_deref().unwrap_or("");
    let mut keys = vec![
        key(&["w", &i.workflow, &i.id]),
        key(&["ws", &i.workflow, &i.state, &i.id]),
        key(&["wt", &i.workflow, team, &i.id]),
        key(&["wst", &i.workflow, &i.state, team, &i.id]),
        key(&["t", team, &i.id]),
        key(&["r", &i.requester, &i.id]),
    ];
    if let Some(d) = &i.requester_department {
        keys.push(key(&["d", d, &i.id]));
    }
    if let Some(a) = &i.assignment.assignee {
        keys.push(key(&["a", a, &i.id]));
    }
    keys
}

fn count_key(i: &Instance) -> String {
    key(&[&i.workflow, &i.state, i.assignment.team.as_deref().unwrap_or("")])
}

fn add_count(w: &mut dyn Write, k: &str, delta: i64) -> Result<()> {
    let current = match w.get(Table::InstanceCounts, k)? {
        Some(v) => String::from_utf8_lossy(&v).parse::<i64>().map_err(|e| StoreError::Corrupt { what: "instance count".into(), detail: e.to_string() })?,
        None => 0,
    };
    match current + delta {
        0 => w.delete(Table::InstanceCounts, k),
        n => w.put(Table::InstanceCounts, k, n.to_string().as_bytes()),
    }
}

/// Moves an instance's index entries and count from `old` to `new`.
fn reindex(w: &mut dyn Write, old: Option<&Instance>, new: &Instance) -> Result<()> {
    let new_keys = index_keys(new);
    let old_keys = old.map(index_keys).unwrap_or_default();
    for k in old_keys.iter().filter(|k| !new_keys.contains(k)) {
        w.delete(Table::InstanceIndex, k)?;
    }
    for k in new_keys.iter().filter(|k| !old_keys.contains(k)) {
        w.put(Table::InstanceIndex, k, b"")?;
    }
    let new_user = user_count_keys(new);
    let old_user = old.map(user_count_keys).unwrap_or_default();
    for k in old_user.iter().filter(|k| !new_user.contains(k)) {
        add_user_count(w, k, -1)?;
    }
    for k in new_user.iter().filter(|k| !old_user.contains(k)) {
        add_user_count(w, k, 1)?;
    }
    let to = count_key(new);
    match old.map(count_key) {
        Some(from) if from == to => Ok(()),
        Some(from) => {
            add_count(w, &from, -1)?;
            add_count(w, &to, 1)
        }
        None => add_count(w, &to, 1),
    }
}

pub fn instance_counts(r: &dyn Read, workflow: Option<&str>) -> Result<Vec<InstanceCount>> {
    let range = workflow.map(prefix_range);
    let (lo, hi) = match &range {
        Some((lo, hi)) => (Included(lo.as_str()), Excluded(hi.as_str())),
        None => (Unbounded, Unbounded),
    };
    let mut out = Vec::new();
    r.range(Table::InstanceCounts, lo, hi, false, &mut |k, v| {
        let parts: Vec<&str> = k.split(SEP).collect();
        let count = String::from_utf8_lossy(v)
            .parse()
            .map_err(|e: std::num::ParseIntError| StoreError::Corrupt { what: "instance count".into(), detail: e.to_string() })?;
        if let [w, s, t] = parts[..] {
            out.push(InstanceCount { workflow: w.into(), state: s.into(), team: (!t.is_empty()).then(|| t.to_string()), count });
        }
        Ok(true)
    })?;
    Ok(out)
}

/// Indexes every instance of a store written before the index existed (once).
fn ensure_indexes(w: &mut dyn Write) -> Result<()> {
    // An empty table has nothing to convert to the compact format.
    for (table, _, done) in COMPACTED {
        if w.get(Table::Meta, done)?.is_none() {
            let mut any = false;
            w.range(table, Unbounded, Unbounded, false, &mut |_, _| {
                any = true;
                Ok(false)
            })?;
            if !any {
                w.put(Table::Meta, done, b"1")?;
            }
        }
    }
    ensure_record_counts(w)?;
    ensure_dead_letters(w)?;
    if w.get(Table::Meta, "instance_index")?.is_some() {
        return ensure_requester_index(w);
    }
    for_each_instance(w, &mut |w, i| reindex(w, None, i))?;
    w.put(Table::Meta, "instance_index", b"1")?;
    w.put(Table::Meta, "instance_index_requester", b"1")?;
    ensure_outbox_index(w)
}

/// Indexes the pending outbox messages of a store written before the index existed (once).
fn ensure_outbox_index(w: &mut dyn Write) -> Result<()> {
    if w.get(Table::Meta, "outbox_due_index")?.is_some() {
        return Ok(());
    }
    let mut pending = Vec::new();
    w.range(Table::Outbox, Unbounded, Unbounded, false, &mut |k, v| {
        if let Ok(item) = from_bytes::<OutboxItem>("outbox item", v)
            && item.status == "pending"
        {
            pending.push(key(&[&item.next_at.to_string(), k]));
        }
        Ok(true)
    })?;
    for k in pending {
        w.put(Table::OutboxDue, &k, b"")?;
    }
    w.put(Table::Meta, "outbox_due_index", b"1")
}

/// Adds the requester entries (for visibility) to an index built before they existed (once).
fn ensure_requester_index(w: &mut dyn Write) -> Result<()> {
    ensure_outbox_index(w)?;
    if w.get(Table::Meta, "instance_index_requester")?.is_some() {
        return Ok(());
    }
    for_each_instance(w, &mut |w, i| {
        w.put(Table::InstanceIndex, &key(&["r", &i.requester, &i.id]), b"")?;
        for k in user_count_keys(i) {
            add_user_count(w, &k, 1)?;
        }
        Ok(())
    })?;
    w.put(Table::Meta, "instance_index_requester", b"1")
}

/// Calls `f` with every instance, read a chunk at a time (a range callback
/// must not write to the store it reads).
fn for_each_instance(w: &mut dyn Write, f: &mut dyn FnMut(&mut dyn Write, &Instance) -> Result<()>) -> Result<()> {
    const CHUNK: usize = 1024;
    let mut after: Option<String> = None;
    loop {
        let mut chunk: Vec<Instance> = Vec::new();
        let lo = after.as_deref().map_or(Unbounded, Excluded);
        w.range(Table::Instances, lo, Unbounded, false, &mut |k, v| {
            chunk.push(codec::decode_instance(k, v)?);
            Ok(chunk.len() < CHUNK)
        })?;
        for i in &chunk {
            f(w, i)?;
        }
        match chunk.last() {
            Some(last) if chunk.len() == CHUNK => after = Some(last.id.clone()),
            _ => return Ok(()),
        }
    }
}

pub fn history(r: &dyn Read, id: &str) -> Result<Vec<Event>> {
    let (lo, hi) = prefix_range(id);
    let mut out = Vec::new();
    r.range(Table::Events, Included(&lo), Excluded(&hi), false, &mut |k, v| {
        out.push(codec::decode_event(id, event_seq(k)?, v)?);
        Ok(true)
    })?;
    Ok(out)
}

/// The sequence number in an event's key (`instance␟seq`, [`event_key`]).
fn event_seq(k: &str) -> Result<u64> {
    k.rsplit(SEP)
        .next()
        .and_then(crate::tables::event_seq)
        .ok_or_else(|| StoreError::Corrupt { what: "event key".into(), detail: format!("{k:?} does not end in a sequence number") })
}

/// The tables [`compact`] converts, each with its marks in `meta`: where
/// it goes on from (the last key it looked at) and that none is left.
const COMPACTED: [(Table, &str, &str); 2] =
    [(Table::Events, "events_compacted_through", "events_compact"), (Table::Instances, "instances_compacted_through", "instances_compact")];

/// Rewrites in the compact format up to `limit` entries kept as JSON
/// (looking at no more than `limit` entries), events first, then instances.
fn compact(w: &mut dyn Write, limit: usize) -> Result<CommitOutcome> {
    let limit = limit.max(1);
    for (table, through, done) in COMPACTED {
        if w.get(Table::Meta, done)?.is_some() {
            continue;
        }
        let from = w.get(Table::Meta, through)?.map(|v| String::from_utf8_lossy(&v).into_owned());
        let lo = from.as_deref().map_or(Unbounded, Excluded);
        let (mut looked, mut last, mut json) = (0usize, None::<String>, Vec::new());
        w.range(table, lo, Unbounded, false, &mut |k, v| {
            looked += 1;
            last = Some(k.to_string());
            if codec::is_json(v) {
                json.push((k.to_string(), v.to_vec()));
            }
            Ok(looked < limit)
        })?;
        for (k, v) in json {
            // One that does not read stays as it is (reading it reports it):
            // the rest of the store is still converted.
            let compact = match table {
                Table::Events => {
                    let id = k.rsplit_once(SEP).map_or(k.as_str(), |(id, _)| id);
                    event_seq(&k).and_then(|seq| codec::decode_event(id, seq, &v)).and_then(|e| codec::encode_event(&e))
                }
                _ => codec::decode_instance(&k, &v).and_then(|i| codec::encode_instance(&i)),
            };
            if let Ok(bytes) = compact {
                w.put(table, &k, &bytes)?;
            }
        }
        match last {
            Some(k) if looked >= limit => w.put(Table::Meta, through, k.as_bytes())?,
            _ => {
                w.delete(Table::Meta, through)?;
                w.put(Table::Meta, done, b"1")?;
            }
        }
        // Nothing was left in this table (its last chunk ended exactly at
        // the limit, or it is empty): go on to the next one, so that 0 is
        // answered only when every table is done.
        if looked > 0 {
            return Ok(CommitOutcome::Sequence(looked as u64));
        }
    }
    Ok(CommitOutcome::Sequence(0))
}

pub fn idempotent(r: &dyn Read, k: &str) -> Result<Option<IdempotentResult>> {
    get(r, Table::Idempotency, k, "idempotency record")
}

pub fn bundle(r: &dyn Read, version: &str) -> Result<Option<Sources>> {
    get(r, Table::Bundles, version, "bundle sources")
}

pub fn bundle_versions(r: &dyn Read) -> Result<Vec<String>> {
    let mut out = Vec::new();
    r.range(Table::BundleOrder, Unbounded, Unbounded, false, &mut |_, v| {
        out.push(String::from_utf8_lossy(v).to_string());
        Ok(true)
    })?;
    Ok(out)
}

pub fn current_bundle(r: &dyn Read) -> Result<Option<String>> {
    Ok(r.get(Table::Meta, "current_bundle")?.map(|v| String::from_utf8_lossy(&v).to_string()))
}

pub fn record(r: &dyn Read, record_type: &str, id: &str) -> Result<Option<Record>> {
    get(r, Table::Records, &key(&[record_type, id]), "record")
}

pub fn records(r: &dyn Read, record_type: &str) -> Result<Vec<Record>> {
    collect_prefix(r, Table::Records, record_type, "record")
}

/// Up to `limit` records of a type in id order after the id `after`
/// (archived ones only when `archived`), and whether more follow.
pub fn records_page(r: &dyn Read, record_type: &str, after: Option<&str>, limit: usize, archived: bool) -> Result<(Vec<Record>, bool)> {
    let (lo, hi) = prefix_range(record_type);
    let from = after.map(|a| key(&[record_type, a]));
    let lower = match &from {
        Some(k) => Excluded(k.as_str()),
        None => Included(lo.as_str()),
    };
    let mut out = Vec::new();
    let mut more = false;
    r.range(Table::Records, lower, Excluded(&hi), false, &mut |_, v| {
        let rec: Record = from_bytes("record", v)?;
        if !archived && rec.archived {
            return Ok(true);
        }
        if out.len() == limit {
            more = true;
            return Ok(false);
        }
        out.push(rec);
        Ok(true)
    })?;
    Ok((out, more))
}

/// How many records of a type there are: `(all, not archived)`.
pub fn record_counts(r: &dyn Read, record_type: &str) -> Result<(u64, u64)> {
    let read = |k: String| -> Result<u64> { Ok(r.get(Table::Meta, &k)?.and_then(|v| String::from_utf8_lossy(&v).parse().ok()).unwrap_or(0)) };
    Ok((read(key(&["records_all", record_type]))?, read(key(&["records_live", record_type]))?))
}

/// Keeps the record counts of a type as a record goes from `old` to `new`
/// (`None`: not there).
fn count_record(w: &mut dyn Write, record_type: &str, old: Option<bool>, new: Option<bool>) -> Result<()> {
    let one = |x: Option<bool>| (x.is_some() as i64, (x == Some(false)) as i64);
    let (all, live) = (one(new).0 - one(old).0, one(new).1 - one(old).1);
    for (name, delta) in [("records_all", all), ("records_live", live)] {
        if delta != 0 {
            let k = key(&[name, record_type]);
            let n: i64 = w.get(Table::Meta, &k)?.and_then(|v| String::from_utf8_lossy(&v).parse().ok()).unwrap_or(0);
            w.put(Table::Meta, &k, (n + delta).max(0).to_string().as_bytes())?;
        }
    }
    Ok(())
}

/// `dead␟SEQ` in `Meta` for each dead letter, so that they are counted
/// without reading the outbox.
fn dead_letter_key(seq: &str) -> String {
    key(&["dead", seq])
}

/// Dead letters of the outbox (counted up to `limit`).
pub fn dead_letters(r: &dyn Read, limit: usize) -> Result<usize> {
    let (lo, hi) = prefix_range("dead");
    let mut n = 0;
    r.range(Table::Meta, Included(&lo), Excluded(&hi), false, &mut |_, _| {
        n += 1;
        Ok(n < limit)
    })?;
    Ok(n)
}

/// The dead-letter marks of an older store, made once.
fn ensure_dead_letters(w: &mut dyn Write) -> Result<()> {
    if w.get(Table::Meta, "dead_letters_marked")?.is_some() {
        return Ok(());
    }
    let mut dead = Vec::new();
    w.range(Table::Outbox, Unbounded, Unbounded, false, &mut |k, v| {
        if let Ok(item) = from_bytes::<OutboxItem>("outbox item", v)
            && item.status == "dead"
        {
            dead.push(k.to_string());
        }
        Ok(true)
    })?;
    for k in dead {
        w.put(Table::Meta, &dead_letter_key(&k), b"")?;
    }
    w.put(Table::Meta, "dead_letters_marked", b"1")
}

/// Counts the records of a store written before the counts existed (once).
fn ensure_record_counts(w: &mut dyn Write) -> Result<()> {
    if w.get(Table::Meta, "record_counts")?.is_some() {
        return Ok(());
    }
    let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    w.range(Table::Records, Unbounded, Unbounded, false, &mut |_, v| {
        let rec: Record = from_bytes("record", v)?;
        let c = counts.entry(rec.record_type).or_default();
        c.0 += 1;
        c.1 += u64::from(!rec.archived);
        Ok(true)
    })?;
    for (t, (all, live)) in counts {
        w.put(Table::Meta, &key(&["records_all", &t]), all.to_string().as_bytes())?;
        w.put(Table::Meta, &key(&["records_live", &t]), live.to_string().as_bytes())?;
    }
    w.put(Table::Meta, "record_counts", b"1")
}

pub fn record_history(r: &dyn Read, record_type: &str, id: &str) -> Result<Vec<RecordEvent>> {
    collect_prefix(r, Table::RecordEvents, &key(&[record_type, id]), "record event")
}

pub fn referrers(r: &dyn Read, record_type: &str, id: &str) -> Result<Vec<String>> {
    let prefix = key(&[record_type, id]);
    Ok(keys_with_prefix(r, Table::Refs, &prefix)?.into_iter().map(|k| k[prefix.len() + 1..].to_string()).collect())
}

#[derive(Serialize, Deserialize)]
struct StoredBalance {
    dims: BTreeMap<String, String>,
    on_hand: i64,
    reserved: i64,
}

pub fn balances(r: &dyn Read, ledger: &str) -> Result<Vec<BalanceRow>> {
    let rows: Vec<StoredBalance> = collect_prefix(r, Table::Balances, ledger, "balance")?;
    Ok(rows.into_iter().map(|b| BalanceRow { dims: b.dims, balance: Balance { on_hand: b.on_hand, reserved: b.reserved } }).collect())
}

pub fn movements(r: &dyn Read, ledger: &str, after: u64, limit: usize) -> Result<Vec<Movement>> {
    let lo = key(&[ledger, &num(after.saturating_add(1))]);
    let (_, hi) = prefix_range(ledger);
    let mut out = Vec::new();
    r.range(Table::Movements, Included(&lo), Excluded(&hi), false, &mut |_, v| {
        out.push(from_bytes("movement", v)?);
        Ok(out.len() < limit)
    })?;
    Ok(out)
}

/// The newest movements of a ledger, newest first, at most `limit`.
pub fn recent_movements(r: &dyn Read, ledger: &str, limit: usize) -> Result<Vec<Movement>> {
    let (lo, hi) = prefix_range(ledger);
    let mut out = Vec::new();
    r.range(Table::Movements, Included(&lo), Excluded(&hi), true, &mut |_, v| {
        out.push(from_bytes("movement", v)?);
        Ok(out.len() < limit)
    })?;
    Ok(out)
}

pub fn ledger_events(r: &dyn Read) -> Result<Vec<LedgerEvent>> {
    ledger_events_after(r, 0, usize::MAX)
}

/// Ledger events after `after` (a seq), oldest first, at most `limit`.
pub fn ledger_events_after(r: &dyn Read, after: u64, limit: usize) -> Result<Vec<LedgerEvent>> {
    let lo = num(after.saturating_add(1));
    let mut out = Vec::new();
    r.range(Table::LedgerEvents, Included(&lo), Unbounded, false, &mut |_, v| {
        out.push(from_bytes("ledger event", v)?);
        Ok(out.len() < limit)
    })?;
    Ok(out)
}

/// Pending outbox messages due at or before `now`, earliest first, at most `limit`.
pub fn due_outbox(r: &dyn Read, now: Time, limit: usize) -> Result<Vec<OutboxItem>> {
    let hi = format!("{now}\u{20}");
    let mut seqs = Vec::new();
    r.range(Table::OutboxDue, Unbounded, Excluded(&hi), false, &mut |k, _| {
        if let Some((_, seq)) = k.rsplit_once(SEP) {
            seqs.push(seq.to_string());
        }
        Ok(seqs.len() < limit)
    })?;
    let mut out = Vec::new();
    for seq in seqs {
        // A message that cannot be read is skipped (and logged), never stops the others.
        match get::<OutboxItem>(r, Table::Outbox, &seq, "outbox item") {
            Ok(Some(item)) if item.status == "pending" => out.push(item),
            Ok(_) => {}
            Err(e) => tracing::error!(seq = %seq, error = %e, "an outbox message cannot be read; skipped"),
        }
    }
    Ok(out)
}

pub fn due_timers(r: &dyn Read, now: Time, limit: usize) -> Result<Vec<TimerSpec>> {
    let hi = format!("{now}\u{20}");
    let mut out = Vec::new();
    r.range(Table::Timers, Unbounded, Excluded(&hi), false, &mut |_, v| {
        out.push(from_bytes("timer", v)?);
        Ok(out.len() < limit)
    })?;
    Ok(out)
}

pub fn timers_of(r: &dyn Read, instance: &str) -> Result<Vec<TimerSpec>> {
    let mut out = Vec::new();
    for k in keys_with_prefix(r, Table::TimerIndex, instance)? {
        if let Some(due_key) = r.get(Table::TimerIndex, &k)?
            && let Some(t) = get(r, Table::Timers, &String::from_utf8_lossy(&due_key), "timer")?
        {
            out.push(t);
        }
    }
    Ok(out)
}

pub fn inbox(r: &dyn Read, user: &str) -> Result<Vec<InboxItem>> {
    collect_prefix(r, Table::Inbox, user, "inbox item")
}

pub fn outbox(r: &dyn Read) -> Result<Vec<OutboxItem>> {
    let mut out = Vec::new();
    r.range(Table::Outbox, Unbounded, Unbounded, false, &mut |_, v| {
        out.push(from_bytes("outbox item", v)?);
        Ok(true)
    })?;
    Ok(out)
}

fn timer_key(t: &TimerSpec) -> String {
    key(&[&t.due_at.to_string(), &t.instance_id, &t.timer])
}

fn drop_timers_of(w: &mut dyn Write, instance: &str) -> Result<()> {
    for k in keys_with_prefix(w, Table::TimerIndex, instance)? {
        if let Some(due_key) = w.get(Table::TimerIndex, &k)? {
            w.delete(Table::Timers, &String::from_utf8_lossy(&due_key))?;
        }
        w.delete(Table::TimerIndex, &k)?;
    }
    Ok(())
}

fn drop_timer(w: &mut dyn Write, t: &TimerSpec) -> Result<bool> {
    let k = timer_key(t);
    if w.get(Table::Timers, &k)?.is_none() {
        return Ok(false);
    }
    w.delete(Table::Timers, &k)?;
    w.delete(Table::TimerIndex, &key(&[&t.instance_id, &t.timer]))?;
    Ok(true)
}

// ---- writes ----

fn next(w: &mut dyn Write, name: &str) -> Result<u64> {
    let k = format!("seq{SEP}{name}");
    let current = w.get(Table::Meta, &k)?.and_then(|v| String::from_utf8_lossy(&v).parse::<u64>().ok()).unwrap_or(0);
    w.put(Table::Meta, &k, (current + 1).to_string().as_bytes())?;
    Ok(current + 1)
}

fn add_refs(w: &mut dyn Write, source: &str, refs: &[(String, String)]) -> Result<()> {
    for (t, id) in refs {
        // Most commands repeat the refs the instance already has: writing them
        // again would still copy their pages in the commit.
        let k = key(&[t, id, source]);
        if w.get(Table::Refs, &k)?.is_none() {
            w.put(Table::Refs, &k, b"")?;
            w.put(Table::RefsOut, &key(&[source, t, id]), b"")?;
        }
    }
    Ok(())
}

fn replace_refs(w: &mut dyn Write, source: &str, refs: &[(String, String)]) -> Result<()> {
    for old in keys_with_prefix(w, Table::RefsOut, source)? {
        let parts: Vec<&str> = old[source.len() + 1..].splitn(2, SEP).collect();
        if let [t, id] = parts[..] {
            w.delete(Table::Refs, &key(&[t, id, source]))?;
        }
        w.delete(Table::RefsOut, &old)?;
    }
    add_refs(w, source, refs)
}

/// The balance changes of all postings, checked before anything is written.
struct LedgerPlan {
    balances: Vec<(String, StoredBalance)>,
    movements: Vec<(String, Movement)>,
    events: Vec<LedgerEvent>,
}

fn plan_postings(w: &mut dyn Write, postings: &[PostingWrite], actor: &str, at: Time, instance: Option<(&str, u64)>) -> Result<Result<LedgerPlan, Violation>> {
    let mut touched: HashMap<(String, String), StoredBalance> = HashMap::new();
    let mut order: Vec<(String, String)> = Vec::new();
    let mut movements = Vec::new();
    let mut seqs: HashMap<String, u64> = HashMap::new();
    for pw in postings {
        let p = &pw.posting;
        for delta in deltas(p) {
            let bk = (p.ledger.clone(), balance_key(&delta.dims, &pw.dimensions));
            if !touched.contains_key(&bk) {
                let stored: Option<StoredBalance> = get(w, Table::Balances, &key(&[&bk.0, &bk.1]), "balance")?;
                touched.insert(bk.clone(), stored.unwrap_or(StoredBalance { dims: delta.dims.clone(), on_hand: 0, reserved: 0 }));
                order.push(bk.clone());
            }
            let Some(current) = touched.get_mut(&bk) else { continue };
            let before = Balance { on_hand: current.on_hand, reserved: current.reserved };
            let after = match flowform_core::ledger::apply(&p.ledger, &before, &delta, pw.non_negative) {
                Ok(b) => b,
                Err(v) => return Ok(Err(v)),
            };
            current.on_hand = after.on_hand;
            current.reserved = after.reserved;
            let kind = match (p.kind, delta.on_hand > 0) {
                (flowform_core::ledger::MovementKind::Transfer, true) => "transfer_in".to_string(),
                (flowform_core::ledger::MovementKind::Transfer, false) => "transfer_out".to_string(),
                _ => serde_json::to_value(p.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
            };
            let seq = match seqs.get(&p.ledger) {
                Some(s) => s + 1,
                None => last_movement(w, &p.ledger)? + 1,
            };
            seqs.insert(p.ledger.clone(), seq);
            movements.push((
                key(&[&p.ledger, &num(seq)]),
                Movement {
                    seq,
                    ledger: p.ledger.clone(),
                    kind,
                    dims: delta.dims.clone(),
                    quantity: p.quantity,
                    on_hand_delta: delta.on_hand,
                    reserved_delta: delta.reserved,
                    reason: p.reason.clone(),
                    actor: actor.to_string(),
                    at,
                    instance_id: instance.map(|(i, _)| i.to_string()),
                    event_seq: instance.map(|(_, s)| s),
                },
            ));
        }
    }
    // Thresholds: the total available of the dimension's value, before and after.
    let mut events = Vec::new();
    let mut checked = Vec::new();
    for pw in postings {
        let Some(t) = &pw.threshold else { continue };
        let id = (pw.posting.ledger.clone(), t.dimension.clone(), t.value.clone());
        if checked.contains(&id) {
            continue;
        }
        checked.push(id);
        let ledger = &pw.posting.ledger;
        let mut total_before = 0;
        let mut total_after = 0;
        let mut seen = std::collections::HashSet::new();
        for row in balances(w, ledger)? {
            if row.dims.get(&t.dimension) == Some(&t.value) {
                let bk = (ledger.clone(), balance_key(&row.dims, &pw.dimensions));
                total_before += row.balance.available();
                let after = touched.get(&bk).map_or(row.balance.available(), |b| b.on_hand - b.reserved);
                total_after += after;
                seen.insert(bk);
            }
        }
        for (bk, b) in &touched {
            if bk.0 == *ledger && !seen.contains(bk) && b.dims.get(&t.dimension) == Some(&t.value) {
                total_after += b.on_hand - b.reserved;
            }
        }
        if total_before >= t.minimum && total_after < t.minimum {
            events.push(LedgerEvent {
                seq: 0,
                kind: "ledger.below_threshold".into(),
                ledger: ledger.clone(),
                dimension: t.dimension.clone(),
                value: t.value.clone(),
                available: total_after,
                minimum: t.minimum,
                at,
            });
        }
    }
    let balances = order.into_iter().filter_map(|bk| touched.remove(&bk).map(|b| (key(&[&bk.0, &bk.1]), b))).collect();
    Ok(Ok(LedgerPlan { balances, movements, events }))
}

fn last_movement(r: &dyn Read, ledger: &str) -> Result<u64> {
    let (lo, hi) = prefix_range(ledger);
    let mut last = 0;
    r.range(Table::Movements, Included(&lo), Excluded(&hi), true, &mut |k, _| {
        last = k.rsplit(SEP).next().and_then(|n| n.parse().ok()).unwrap_or(0);
        Ok(false)
    })?;
    Ok(last)
}

fn write_plan(w: &mut dyn Write, plan: LedgerPlan) -> Result<()> {
    for (k, b) in plan.balances {
        w.put(Table::Balances, &k, &to_bytes(&b)?)?;
    }
    for (k, m) in plan.movements {
        w.put(Table::Movements, &k, &to_bytes(&m)?)?;
    }
    for mut e in plan.events {
        e.seq = next(w, "ledger_events")?;
        w.put(Table::LedgerEvents, &num(e.seq), &to_bytes(&e)?)?;
    }
    Ok(())
}

fn replay_or_none(w: &mut dyn Write, idem: &Option<IdempotencyKey>) -> Result<Option<CommitOutcome>> {
    if let Some(idem) = idem
        && let Some(first) = idempotent(w, &idem.key)?
    {
        return Ok(Some(CommitOutcome::Replay(Box::new(first))));
    }
    Ok(None)
}

/// Writes a checked command's instance, event, idempotency result,
/// references, timers and notifications (not its movements or records).
fn write_command(w: &mut dyn Write, c: &CommandWrite, old: Option<&Instance>) -> Result<()> {
    w.write_instance(&c.instance)?;
    reindex(w, old, &c.instance)?;
    w.put(Table::Events, &event_key(&c.instance.id, c.event.seq), &codec::encode_event(&c.event)?)?;
    if let Some(idem) = &c.idempotency {
        let result = IdempotentResult {
            fingerprint: idem.fingerprint.clone(),
            instance: Some(Instance::clone(&c.instance)),
            record: None,
            movements: None,
            at: Some(c.event.at),
        };
        w.put(Table::Idempotency, &idem.key, &to_bytes(&result)?)?;
    }
    add_refs(w, &format!("instance:{}", c.instance.id), &c.refs)?;
    for (k, value) in &c.meta {
        w.put(Table::Meta, &format!("user{SEP}{k}"), value.as_bytes())?;
    }
    if let Some(t) = &c.fired_timer {
        drop_timer(w, t)?;
    }
    if let Some(timers) = &c.timers {
        drop_timers_of(w, &c.instance.id)?;
        for t in timers {
            let k = timer_key(t);
            w.put(Table::Timers, &k, &to_bytes(t)?)?;
            w.put(Table::TimerIndex, &key(&[&t.instance_id, &t.timer]), k.as_bytes())?;
        }
    }
    for item in &c.inbox {
        let mut item = item.clone();
        item.seq = next(w, "inbox")?;
        w.put(Table::Inbox, &key(&[&item.user, &num(item.seq)]), &to_bytes(&item)?)?;
    }
    for item in &c.outbox {
        let mut item = item.clone();
        item.seq = next(w, "outbox")?;
        w.put(Table::Outbox, &num(item.seq), &to_bytes(&item)?)?;
        w.put(Table::OutboxDue, &key(&[&item.next_at.to_string(), &num(item.seq)]), b"")?;
    }
    Ok(())
}

/// Applies one job: every check first, then every write.
pub fn apply(w: &mut dyn Write, job: &Job) -> Result<CommitOutcome> {
    match job {
        Job::Command(c) => {
            if let Some(replay) = replay_or_none(w, &c.idempotency)? {
                return Ok(replay);
            }
            let old = w.read_instance(&c.instance.id)?;
            let current = old.as_ref().map_or(0, |i| i.version);
            if current != c.expected_version {
                return Ok(CommitOutcome::Conflict { current_version: current });
            }
            if let Some(t) = &c.fired_timer
                && w.get(Table::Timers, &timer_key(t))?.is_none()
            {
                return Ok(CommitOutcome::TimerGone);
            }
            // The records it updates must not have changed since they were read
            // (checked before anything is written: a conflict decides again).
            // A record written twice by one command: the second write follows the first.
            let mut planned: HashMap<(&str, &str), u64> = HashMap::new();
            for rw in &c.records {
                let k = (rw.record.record_type.as_str(), rw.record.id.as_str());
                let now = match planned.get(&k) {
                    Some(v) => *v,
                    None => record(w, k.0, k.1)?.map_or(0, |r| r.version),
                };
                if now != rw.expected_version {
                    return Ok(CommitOutcome::RecordChanged);
                }
                planned.insert(k, rw.record.version);
            }
            // The instances it starts are new (their ids are fresh ULIDs) and post nothing.
            for child in &c.children {
                if child.expected_version != 0 || w.read_instance(&child.instance.id)?.is_some() || !child.postings.is_empty() || !child.children.is_empty() {
                    return Ok(CommitOutcome::Conflict { current_version: current });
                }
            }
            let plan = match plan_postings(w, &c.postings, &c.event.actor, c.event.at, Some((&c.instance.id, c.event.seq)))? {
                Ok(plan) => plan,
                Err(v) => return Ok(CommitOutcome::Violation(v)),
            };
            write_command(w, c, old.as_deref())?;
            write_plan(w, plan)?;
            for child in &c.children {
                write_command(w, child, None)?;
            }
            for rw in &c.records {
                let old = record(w, &rw.record.record_type, &rw.record.id)?.map(|r| r.archived);
                count_record(w, &rw.record.record_type, old, Some(rw.record.archived))?;
                w.put(Table::Records, &key(&[&rw.record.record_type, &rw.record.id]), &to_bytes(&rw.record)?)?;
                w.put(Table::RecordEvents, &key(&[&rw.record.record_type, &rw.record.id, &num(rw.event.seq)]), &to_bytes(&rw.event)?)?;
                replace_refs(w, &format!("record:{}/{}", rw.record.record_type, rw.record.id), &rw.refs)?;
            }
            Ok(CommitOutcome::Committed)
        }
        Job::Record(rw) => {
            if let Some(replay) = replay_or_none(w, &rw.idempotency)? {
                return Ok(replay);
            }
            let k = key(&[&rw.record.record_type, &rw.record.id]);
            let existing = record(w, &rw.record.record_type, &rw.record.id)?;
            let current = existing.as_ref().map_or(0, |r| r.version);
            if current != rw.expected_version {
                return Ok(CommitOutcome::Conflict { current_version: current });
            }
            count_record(w, &rw.record.record_type, existing.map(|r| r.archived), Some(rw.record.archived))?;
            w.put(Table::Records, &k, &to_bytes(&rw.record)?)?;
            w.put(Table::RecordEvents, &key(&[&rw.record.record_type, &rw.record.id, &num(rw.event.seq)]), &to_bytes(&rw.event)?)?;
            replace_refs(w, &format!("record:{}/{}", rw.record.record_type, rw.record.id), &rw.refs)?;
            if let Some(idem) = &rw.idempotency {
                let result = IdempotentResult {
                    fingerprint: idem.fingerprint.clone(),
                    instance: None,
                    record: Some(rw.record.clone()),
                    movements: None,
                    at: Some(rw.event.at),
                };
                w.put(Table::Idempotency, &idem.key, &to_bytes(&result)?)?;
            }
            Ok(CommitOutcome::Committed)
        }
        Job::Purge { record_type, id, expected_version } => {
            let Some(current) = record(w, record_type, id)? else { return Ok(CommitOutcome::Missing) };
            if current.version != *expected_version {
                return Ok(CommitOutcome::Conflict { current_version: current.version });
            }
            let by = referrers(w, record_type, id)?;
            if !by.is_empty() {
                return Ok(CommitOutcome::Referenced(by));
            }
            count_record(w, record_type, Some(current.archived), None)?;
            w.delete(Table::Records, &key(&[record_type, id]))?;
            replace_refs(w, &format!("record:{record_type}/{id}"), &[])?;
            Ok(CommitOutcome::Committed)
        }
        Job::Ledger(lw) => {
            if let Some(replay) = replay_or_none(w, &lw.idempotency)? {
                return Ok(replay);
            }
            let plan = match plan_postings(w, &lw.postings, &lw.actor, lw.at, None)? {
                Ok(plan) => plan,
                Err(v) => return Ok(CommitOutcome::Violation(v)),
            };
            let moved: Vec<Movement> = plan.movements.iter().map(|(_, m)| m.clone()).collect();
            write_plan(w, plan)?;
            if let Some(idem) = &lw.idempotency {
                let result =
                    IdempotentResult { fingerprint: idem.fingerprint.clone(), instance: None, record: None, movements: Some(moved.clone()), at: Some(lw.at) };
                w.put(Table::Idempotency, &idem.key, &to_bytes(&result)?)?;
            }
            Ok(CommitOutcome::Moved(moved))
        }
        Job::ImportInstances(items) => {
            for item in items {
                if let Some(existing) = instance(w, &item.instance.id)? {
                    return Ok(CommitOutcome::Conflict { current_version: existing.version });
                }
            }
            for item in items {
                let i = &item.instance;
                w.put(Table::Instances, &i.id, &codec::encode_instance(i)?)?;
                for e in &item.events {
                    w.put(Table::Events, &event_key(&i.id, e.seq), &codec::encode_event(e)?)?;
                }
                add_refs(w, &format!("instance:{}", i.id), &item.refs)?;
                reindex(w, None, i)?;
            }
            Ok(CommitOutcome::Committed)
        }
        Job::EnsureIndexes => {
            ensure_indexes(w)?;
            Ok(CommitOutcome::Committed)
        }
        Job::Compact { limit } => compact(w, *limit),
        Job::NextSequence(name) => Ok(CommitOutcome::Sequence(next(w, name)?)),
        Job::PutBundle { version, sources } => {
            if w.get(Table::Bundles, version)?.is_none() {
                w.put(Table::Bundles, version, &to_bytes(sources)?)?;
                let n = next(w, "bundle_order")?;
                w.put(Table::BundleOrder, &num(n), version.as_bytes())?;
            }
            Ok(CommitOutcome::Committed)
        }
        Job::Notify { inbox: items, outbox: out, meta } => {
            for item in items {
                let mut item = item.clone();
                item.seq = next(w, "inbox")?;
                w.put(Table::Inbox, &key(&[&item.user, &num(item.seq)]), &to_bytes(&item)?)?;
            }
            for item in out {
                let mut item = item.clone();
                item.seq = next(w, "outbox")?;
                w.put(Table::Outbox, &num(item.seq), &to_bytes(&item)?)?;
                w.put(Table::OutboxDue, &key(&[&item.next_at.to_string(), &num(item.seq)]), b"")?;
            }
            w.put(Table::Meta, &format!("user{SEP}{}", meta.0), meta.1.as_bytes())?;
            Ok(CommitOutcome::Committed)
        }
        Job::SetMeta { key: k, value } => {
            w.put(Table::Meta, &format!("user{SEP}{k}"), value.as_bytes())?;
            Ok(CommitOutcome::Committed)
        }
        Job::DropTimer(t) => {
            drop_timer(w, t)?;
            Ok(CommitOutcome::Committed)
        }
        Job::QuarantineTimer(q) => {
            drop_timer(w, &q.timer)?;
            w.put(Table::Meta, &key(&["quarantine", &q.at.to_string(), &q.timer.instance_id, &q.timer.timer]), &to_bytes(q)?)?;
            Ok(CommitOutcome::Committed)
        }
        Job::RequeueQuarantined => {
            let mut back = 0;
            for k in keys_with_prefix(w, Table::Meta, "quarantine")? {
                if let Some(q) = get::<Quarantined>(w, Table::Meta, &k, "quarantined timer")?
                    && let Some(i) = instance(w, &q.timer.instance_id)?
                    && i.state == q.timer.state
                    && i.state_entered_seq == q.timer.entered_seq
                {
                    let t = &q.timer;
                    let tk = timer_key(t);
                    w.put(Table::Timers, &tk, &to_bytes(t)?)?;
                    w.put(Table::TimerIndex, &key(&[&t.instance_id, &t.timer]), tk.as_bytes())?;
                    back += 1;
                }
                w.delete(Table::Meta, &k)?;
            }
            Ok(CommitOutcome::Sequence(back))
        }
        Job::FailedTrigger(f) => {
            w.put(Table::Meta, &key(&["failed_trigger", &f.at.to_string(), &f.record_type, &f.record, &f.workflow]), &to_bytes(f)?)?;
            Ok(CommitOutcome::Committed)
        }
        Job::ClearQuarantine { upto } => {
            let mut keys = keys_with_prefix(w, Table::Meta, "quarantine")?;
            keys.extend(keys_with_prefix(w, Table::Meta, "failed_trigger")?);
            for k in keys {
                // Keys are quarantine␟at␟instance␟timer: `at` decides.
                let at = k.split(SEP).nth(1).unwrap_or("");
                if upto.as_deref().is_none_or(|u| at <= u) {
                    w.delete(Table::Meta, &k)?;
                }
            }
            Ok(CommitOutcome::Committed)
        }
        Job::MarkRead { user, seq } => {
            let k = key(&[user, &num(*seq)]);
            let Some(mut item) = get::<InboxItem>(w, Table::Inbox, &k, "inbox item")? else { return Ok(CommitOutcome::Missing) };
            item.read = true;
            w.put(Table::Inbox, &k, &to_bytes(&item)?)?;
            Ok(CommitOutcome::Committed)
        }
        Job::Delivery { seq, delivered, error, next_at } => {
            let k = num(*seq);
            let Some(mut item) = get::<OutboxItem>(w, Table::Outbox, &k, "outbox item")? else { return Ok(CommitOutcome::Missing) };
            if item.status != "pending" {
                return Ok(CommitOutcome::Committed);
            }
            // Out of the due index under the time it was due; back in under the next one.
            w.delete(Table::OutboxDue, &key(&[&item.next_at.to_string(), &k]))?;
            item.attempts += 1;
            item.last_error = error.clone();
            if *delivered {
                item.status = "delivered".into();
            } else if let Some(next_at) = next_at {
                item.next_at = *next_at;
            } else {
                item.status = "dead".into();
                w.put(Table::Meta, &dead_letter_key(&k), b"")?;
            }
            if item.status == "pending" {
                w.put(Table::OutboxDue, &key(&[&item.next_at.to_string(), &k]), b"")?;
            }
            w.put(Table::Outbox, &k, &to_bytes(&item)?)?;
            Ok(CommitOutcome::Committed)
        }
        Job::RetryDelivery { seq, at } => {
            let k = num(*seq);
            let Some(mut item) = get::<OutboxItem>(w, Table::Outbox, &k, "outbox item")? else { return Ok(CommitOutcome::Missing) };
            if item.status != "dead" {
                return Ok(CommitOutcome::Committed);
            }
            item.status = "pending".into();
            item.attempts = 0;
            item.next_at = *at;
            w.delete(Table::Meta, &dead_letter_key(&k))?;
            w.put(Table::OutboxDue, &key(&[&item.next_at.to_string(), &k]), b"")?;
            w.put(Table::Outbox, &k, &to_bytes(&item)?)?;
            Ok(CommitOutcome::Committed)
        }
        Job::SetCurrentBundle(version) => {
            w.put(Table::Meta, "current_bundle", version.as_bytes())?;
            Ok(CommitOutcome::Committed)
        }
        Job::Auth { ops, audit } => apply_auth(w, ops, audit),
        Job::Prune { before, ledger_events_upto } => prune(w, before, *ledger_events_upto),
    }
}
