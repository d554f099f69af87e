use super::*;
use flowform_core::time::tm;
use flowform_core::{Assignment, EventKind};
use serde_json::{Map, json};
use std::collections::BTreeMap;
use std::sync::Arc;

fn instance(id: &str, version: u64, state: &str) -> Instance {
    Instance {
        id: id.into(),
        number: None,
        workflow: "w".into(),
        bundle_version: "b1".into(),
        version,
        state: state.into(),
        data: Map::new(),
        assignment: Assignment { team: Some("t".into()), ..Assignment::default() },
        requester: "u".into(),
        requester_department: None,
        created_at: tm("2026-01-01T00:00:00Z"),
        updated_at: tm("2026-01-01T00:00:00Z"),
        state_entered_at: Time::EPOCH,
        state_entered_seq: 0,
        due_at: None,
        overdue: false,
        moved: Vec::new(),
        parent: None,
        children: Vec::new(),
        deadlines: Vec::new(),
    }
}

fn write(id: &str, expected: u64, state: &str, key: Option<&str>) -> CommandWrite {
    let inst = instance(id, expected + 1, state);
    CommandWrite {
        children: Vec::new(),
        meta: Vec::new(),
        records: Vec::new(),
        event: Event {
            instance_id: id.into(),
            seq: expected + 1,
            kind: if expected == 0 { EventKind::Started } else { EventKind::Transition },
            transition: None,
            actor: "u".into(),
            at: tm("2026-01-01T00:00:00Z"),
            bundle_version: "b1".into(),
            from_state: None,
            to_state: state.into(),
            input: json!({}),
            changes: BTreeMap::new(),
            parent: None,
            children: Vec::new(),
            decided_on: Default::default(),
        },
        instance: Arc::new(inst),
        expected_version: expected,
        idempotency: key.map(|k| IdempotencyKey { key: k.into(), fingerprint: "f".into() }),
        refs: vec![("asset".into(), "A1".into())],
        postings: Vec::new(),
        timers: None,
        fired_timer: None,
        inbox: Vec::new(),
        outbox: Vec::new(),
    }
}

fn semantics(store: &dyn Store) {
    assert_eq!(store.commit(write("a", 0, "s1", Some("k1"))).unwrap(), CommitOutcome::Committed);
    assert!(matches!(store.commit(write("a", 0, "s1", Some("k1"))).unwrap(), CommitOutcome::Replay(r) if r.instance.as_ref().unwrap().id == "a"));
    assert_eq!(store.referrers("asset", "A1").unwrap(), vec!["instance:a".to_string()]);
    assert_eq!(store.commit(write("a", 0, "s1", None)).unwrap(), CommitOutcome::Conflict { current_version: 1 });
    assert_eq!(store.commit(write("a", 1, "s2", None)).unwrap(), CommitOutcome::Committed);
    assert_eq!(store.commit(write("a", 1, "s3", None)).unwrap(), CommitOutcome::Conflict { current_version: 2 });
    assert_eq!(store.instance("a").unwrap().unwrap().state, "s2");
    let history = store.history("a").unwrap();
    assert_eq!(history.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    for id in ["b", "c", "d"] {
        store.commit(write(id, 0, "s1", None)).unwrap();
    }
    let page1 = store.instances(&InstanceFilter { limit: 2, ..Default::default() }).unwrap();
    assert_eq!(page1.items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), vec!["d", "c"]);
    let page2 = store.instances(&InstanceFilter { limit: 2, before: page1.next, ..Default::default() }).unwrap();
    assert_eq!(page2.items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), vec!["b", "a"]);
    assert_eq!(page2.next, None);
    let s2 = store.instances(&InstanceFilter { limit: 10, state: Some("s2".into()), ..Default::default() }).unwrap();
    assert_eq!(s2.items.len(), 1);
    let user = UserAccount { id: "nurse".into(), name: "Li".into(), roles: vec!["staff".into()], ..UserAccount::default() };
    store.put_user(&user).unwrap();
    let token = TokenRecord { id: "tok_1".into(), hash: "hash".into(), user: "nurse".into(), ..TokenRecord::default() };
    let entry = AuditEntry { kind: "token_created".into(), actor: "admin".into(), ..AuditEntry::default() };
    store.submit(Job::Auth { ops: vec![AuthOp::PutToken(token.clone())], audit: vec![entry.clone(), entry] }).unwrap();
    assert_eq!(store.user("nurse").unwrap(), Some(user));
    assert_eq!(store.tokens().unwrap(), vec![token]);
    assert_eq!(store.audit(None, 10).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 1], "numbered by the store, newest first");
    let session = |hash: &str, user: &str| SessionRecord { hash: hash.into(), user: user.into(), ..SessionRecord::default() };
    store
        .submit(Job::Auth {
            ops: vec![AuthOp::PutSession(session("s1", "nurse")), AuthOp::PutSession(session("s2", "nurse")), AuthOp::PutSession(session("s3", "admin"))],
            audit: vec![],
        })
        .unwrap();
    store.submit(Job::Auth { ops: vec![AuthOp::DeleteSessionsOf("nurse".into())], audit: vec![] }).unwrap();
    assert_eq!(store.sessions().unwrap().iter().map(|s| s.hash.as_str()).collect::<Vec<_>>(), vec!["s3"]);
    // Touching a session that ended does not bring it back.
    store
        .submit(Job::Auth {
            ops: vec![
                AuthOp::TouchSession { hash: "s1".into(), seen_at: tm("2026-01-02T00:00:00Z") },
                AuthOp::TouchSession { hash: "s3".into(), seen_at: tm("2026-01-02T00:00:00Z") },
            ],
            audit: vec![],
        })
        .unwrap();
    let sessions = store.sessions().unwrap();
    assert_eq!(sessions.iter().map(|s| (s.hash.as_str(), s.seen_at)).collect::<Vec<_>>(), vec![("s3", tm("2026-01-02T00:00:00Z"))]);
}

#[test]
fn memory_store_semantics() {
    semantics(&MemoryStore::new());
}

#[test]
fn redb_store_semantics_and_durability() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RedbStore::open(dir.path()).unwrap();
        semantics(&store);
        assert!(matches!(RedbStore::open(dir.path()), Err(StoreError::Locked { .. })));
    }
    let store = RedbStore::open(dir.path()).unwrap();
    assert_eq!(store.instance("a").unwrap().unwrap().version, 2);
    assert_eq!(store.history("a").unwrap().len(), 2);
    assert_eq!(store.tokens().unwrap()[0].user, "nurse", "accounts are durable like everything else");
}

#[test]
fn concurrent_writers_on_one_instance_one_wins_per_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(dir.path()).unwrap());
    store.commit(write("x", 0, "s", None)).unwrap();
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || store.commit(write("x", 1, "t", None)).unwrap())
        })
        .collect();
    let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(outcomes.iter().filter(|o| **o == CommitOutcome::Committed).count(), 1);
    assert_eq!(store.history("x").unwrap().len(), 2);
}

use flowform_core::ledger::{MovementKind, Posting};

fn posting(kind: MovementKind, warehouse: &str, quantity: i64) -> PostingWrite {
    PostingWrite {
        posting: Posting {
            ledger: "stock".into(),
            kind,
            dims: BTreeMap::from([("part".into(), "P1".into()), ("warehouse".into(), warehouse.into())]),
            quantity,
            to: None,
            reason: "test".into(),
        },
        dimensions: vec!["part".into(), "warehouse".into()],
        non_negative: true,
        threshold: Some(Threshold { dimension: "part".into(), value: "P1".into(), minimum: 3 }),
    }
}

fn ledger(postings: Vec<PostingWrite>) -> Job {
    Job::Ledger(LedgerWrite { postings, actor: "keeper".into(), at: tm("2026-01-01T00:00:00Z"), idempotency: None })
}

#[test]
fn the_last_units_go_to_exactly_as_many_as_there_are_and_balances_equal_movements() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Arc::new(RedbStore::open(dir.path()).unwrap());
        assert!(matches!(store.submit(ledger(vec![posting(MovementKind::Receive, "W1", 5)])).unwrap(), CommitOutcome::Moved(m) if m.len() == 1));
        let handles: Vec<_> = (0..40)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut w = write(&format!("r{i:02}"), 0, "s", None);
                    w.postings = vec![posting(MovementKind::Issue, "W1", 1)];
                    store.commit(w).unwrap()
                })
            })
            .collect();
        let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(outcomes.iter().filter(|o| **o == CommitOutcome::Committed).count(), 5);
        let refused = outcomes.iter().find_map(|o| match o {
            CommitOutcome::Violation(v) => Some(v.clone()),
            _ => None,
        });
        assert_eq!(refused.map(|v| (v.requested, v.available)), Some((1, 0)));
        // The refused commands wrote nothing: no instance, no movement.
        assert_eq!(store.instances(&InstanceFilter { limit: 100, ..Default::default() }).unwrap().items.len(), 5);
    }
    let store = RedbStore::open(dir.path()).unwrap();
    let balances = store.balances("stock").unwrap();
    assert_eq!(balances.len(), 1);
    assert_eq!(balances[0].balance.on_hand, 0);
    let movements = store.movements("stock", 0, 1000).unwrap();
    assert_eq!(movements.len(), 6);
    assert_eq!(movements.iter().map(|m| m.on_hand_delta).sum::<i64>(), 0);
    assert_eq!(movements.iter().map(|m| m.seq).collect::<Vec<_>>(), (1..=6).collect::<Vec<_>>());
    let events = store.ledger_events().unwrap();
    assert_eq!(events.len(), 1, "crossing the minimum once is one event: {events:?}");
    assert_eq!((events[0].kind.as_str(), events[0].available, events[0].minimum), ("ledger.below_threshold", 2, 3));
}

/// Reads while batches are published and applied in the background see
/// whole batches: a move from one warehouse to another (two postings, one
/// job) never shows half done, and what a reader saw never goes back.
#[test]
fn readers_see_whole_batches_while_the_applier_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(dir.path()).unwrap());
    store.submit(ledger(vec![posting(MovementKind::Receive, "W1", 1000)])).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                let (mut reads, mut moved) = (0, 0);
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let balances = store.balances("stock").unwrap();
                    let on_hand = |w: &str| balances.iter().find(|b| b.dims.get("warehouse").map(String::as_str) == Some(w)).map_or(0, |b| b.balance.on_hand);
                    assert_eq!(on_hand("W1") + on_hand("W2"), 1000, "a move seen half done: {balances:?}");
                    assert!(on_hand("W2") >= moved, "a reader saw {moved} moved, then {}", on_hand("W2"));
                    moved = on_hand("W2");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    let moved = store.submit(ledger(vec![posting(MovementKind::Issue, "W1", 1), posting(MovementKind::Receive, "W2", 1)])).unwrap();
                    assert!(matches!(moved, CommitOutcome::Moved(_)), "{moved:?}");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    let balances = store.balances("stock").unwrap();
    assert_eq!(balances.iter().map(|b| b.balance.on_hand).collect::<Vec<_>>(), vec![600, 400]);
}

/// The applier failing (here: panicking) stops the store writing instead
/// of letting published batches pile up: what was acknowledged is in the
/// log and comes back at the next open; later jobs are refused, not hung.
#[test]
fn an_applier_that_panics_stops_the_writer_and_the_log_keeps_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RedbStore::open(dir.path()).unwrap();
        store.panic_next_apply();
        assert_eq!(store.commit(write("kept", 0, "s", None)).unwrap(), CommitOutcome::Committed);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.healthy() {
            assert!(std::time::Instant::now() < deadline, "the store still says it is healthy");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(store.commit(write("refused", 0, "s", None)).is_err(), "a job after the applier stopped is refused");
    }
    let store = RedbStore::open(dir.path()).unwrap();
    assert!(store.instance("kept").unwrap().is_some(), "acknowledged before the panic: replayed from the log");
    assert!(store.instance("refused").unwrap().is_none());
}

#[test]
fn transfers_reservations_and_purges() {
    let store = MemoryStore::new();
    store.submit(ledger(vec![posting(MovementKind::Receive, "W1", 10)])).unwrap();
    let mut transfer = posting(MovementKind::Transfer, "W1", 4);
    transfer.posting.to = Some(BTreeMap::from([("part".into(), "P1".into()), ("warehouse".into(), "W2".into())]));
    store.submit(ledger(vec![transfer])).unwrap();
    store.submit(ledger(vec![posting(MovementKind::Reserve, "W1", 6)])).unwrap();
    let refused = store.submit(ledger(vec![posting(MovementKind::Issue, "W1", 1)])).unwrap();
    assert!(matches!(refused, CommitOutcome::Violation(v) if v.available == 0));
    store.submit(ledger(vec![posting(MovementKind::IssueReserved, "W1", 6)])).unwrap();
    let b: Vec<(String, i64, i64)> =
        store.balances("stock").unwrap().into_iter().map(|r| (r.dims["warehouse"].clone(), r.balance.on_hand, r.balance.reserved)).collect();
    assert_eq!(b, vec![("W1".into(), 0, 0), ("W2".into(), 4, 0)]);
    let kinds: Vec<String> = store.movements("stock", 0, 100).unwrap().into_iter().map(|m| m.kind).collect();
    assert_eq!(kinds, vec!["receive", "transfer_out", "transfer_in", "reserve", "issue_reserved"]);

    use flowform_core::records::{Record, RecordEvent, RecordEventKind};
    let rec = |id: &str, version| Record {
        record_type: "location".into(),
        id: id.into(),
        version,
        title: id.into(),
        data: Map::new(),
        archived: false,
        created_at: Time::EPOCH,
        updated_at: Time::EPOCH,
    };
    let ev = |id: &str, seq| RecordEvent {
        record_type: "location".into(),
        id: id.into(),
        seq,
        kind: RecordEventKind::Created,
        actor: "a".into(),
        at: Time::EPOCH,
        cause: None,
        changes: BTreeMap::new(),
    };
    let put = |id: &str, refs: Vec<(String, String)>| {
        Job::Record(Box::new(RecordWrite { record: rec(id, 1), expected_version: 0, event: ev(id, 1), refs, idempotency: None }))
    };
    store.submit(put("B1", vec![])).unwrap();
    store.submit(put("F1", vec![("location".into(), "B1".into())])).unwrap();
    let purge = |id: &str| Job::Purge { record_type: "location".into(), id: id.into(), expected_version: 1 };
    assert_eq!(store.submit(purge("B1")).unwrap(), CommitOutcome::Referenced(vec!["record:location/F1".into()]));
    assert_eq!(store.submit(purge("F1")).unwrap(), CommitOutcome::Committed);
    assert_eq!(store.submit(purge("B1")).unwrap(), CommitOutcome::Committed, "no longer referenced");
    assert_eq!(store.submit(purge("B1")).unwrap(), CommitOutcome::Missing);
    assert_eq!(store.submit(Job::NextSequence("x".into())).unwrap(), CommitOutcome::Sequence(1));
    assert_eq!(store.submit(Job::NextSequence("x".into())).unwrap(), CommitOutcome::Sequence(2));
}

mod index {
    //! The instance index and counts agree with a scan of every instance, for
    //! any sequence of commands, any filter and any page size.
    use super::*;
    use proptest::prelude::*;

    const WORKFLOWS: [&str; 2] = ["repair", "inspection"];
    const STATES: [&str; 3] = ["open", "doing", "closed"];
    const TEAMS: [Option<&str>; 3] = [Some("hvac"), Some("lift"), None];
    const USERS: [Option<&str>; 2] = [Some("wang"), None];

    /// (instance number, workflow, state, team, assignee): start it, or move it.
    fn step() -> impl Strategy<Value = (usize, usize, usize, usize, usize)> {
        (0..12usize, 0..2usize, 0..3usize, 0..3usize, 0..2usize)
    }

    fn filter() -> impl Strategy<Value = InstanceFilter> {
        (proptest::option::of(0..2usize), proptest::option::of(0..3usize), proptest::option::of(0..2usize), proptest::option::of(0..1usize), 1..5usize)
            .prop_map(|(w, s, t, a, limit)| InstanceFilter {
                workflow: w.map(|w| WORKFLOWS[w].to_string()),
                state: s.map(|s| STATES[s].to_string()),
                team: t.and_then(|t| TEAMS[t].map(str::to_string)),
                assignee: a.and_then(|a| USERS[a].map(str::to_string)),
                limit,
                ..Default::default()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn lists_and_counts_match_a_scan(steps in proptest::collection::vec(step(), 1..60), filters in proptest::collection::vec(filter(), 1..6)) {
            let store = MemoryStore::new();
            let mut versions: BTreeMap<String, u64> = BTreeMap::new();
            for (n, w, s, t, a) in steps {
                let id = format!("I{n:02}");
                let expected = versions.get(&id).copied().unwrap_or(0);
                let mut c = write(&id, expected, STATES[s], None);
                // A started instance keeps its workflow.
                Arc::make_mut(&mut c.instance).workflow = store.instance(&id).unwrap().map_or(WORKFLOWS[w].to_string(), |i| i.workflow);
                Arc::make_mut(&mut c.instance).assignment = Assignment { team: TEAMS[t].map(str::to_string), assignee: USERS[a].map(str::to_string), vendor: None };
                prop_assert_eq!(store.commit(c).unwrap(), CommitOutcome::Committed);
                versions.insert(id, expected + 1);
            }
            let all: Vec<Instance> = versions.keys().rev().map(|id| store.instance(id).unwrap().unwrap()).collect();
            for f in filters {
                let expected: Vec<String> = all.iter().filter(|i| f.matches(i)).map(|i| i.id.clone()).collect();
                let mut got = Vec::new();
                let mut page_filter = f.clone();
                loop {
                    let page = store.instances(&page_filter).unwrap();
                    prop_assert!(page.items.len() <= f.limit);
                    got.extend(page.items.iter().map(|i| i.id.clone()));
                    match page.next {
                        Some(next) => page_filter.before = Some(next),
                        None => break,
                    }
                }
                prop_assert_eq!(got, expected, "filter {:?}", f);
            }
            let mut counted: BTreeMap<(String, String, Option<String>), u64> = BTreeMap::new();
            for i in &all {
                *counted.entry((i.workflow.clone(), i.state.clone(), i.assignment.team.clone())).or_default() += 1;
            }
            let kept: BTreeMap<_, _> = store.instance_counts(None).unwrap().into_iter().map(|c| ((c.workflow, c.state, c.team), c.count)).collect();
            prop_assert_eq!(kept, counted);
        }

        /// What a restricted user may read: the merged list and the counts
        /// equal a scan filtered by `Visibility::allows`, for any reach per
        /// workflow, any teams, and instances requested by and assigned to anyone.
        #[test]
        fn restricted_lists_and_counts_match_a_scan(
            steps in proptest::collection::vec((step(), 0..3usize), 1..60),
            reach in proptest::collection::vec((any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()), 2),
            in_department in any::<bool>(),
            teams in proptest::collection::vec(0..2usize, 0..2),
            workflow in proptest::option::of(0..2usize),
            state in proptest::option::of(0..3usize),
            limit in 1..5usize,
        ) {
            const REQUESTERS: [&str; 3] = ["wang", "li", "chen"];
            let store = MemoryStore::new();
            let mut versions: BTreeMap<String, u64> = BTreeMap::new();
            for ((n, w, s, t, a), r) in steps {
                let id = format!("I{n:02}");
                let expected = versions.get(&id).copied().unwrap_or(0);
                let mut c = write(&id, expected, STATES[s], None);
                let existing = store.instance(&id).unwrap();
                Arc::make_mut(&mut c.instance).workflow = existing.as_ref().map_or(WORKFLOWS[w].to_string(), |i| i.workflow.clone());
                Arc::make_mut(&mut c.instance).requester = existing.as_ref().map_or(REQUESTERS[r].to_string(), |i| i.requester.clone());
                // Requesters of two departments; "chen" has none.
                Arc::make_mut(&mut c.instance).requester_department = existing.as_ref().map_or([Some("icu"), Some("icu"), None][r].map(str::to_string), |i| i.requester_department.clone());
                Arc::make_mut(&mut c.instance).assignment = Assignment { team: TEAMS[t].map(str::to_string), assignee: USERS[a].map(str::to_string), vendor: None };
                prop_assert_eq!(store.commit(c).unwrap(), CommitOutcome::Committed);
                versions.insert(id, expected + 1);
            }
            let v = Visibility {
                user: "wang".into(),
                teams: teams.iter().filter_map(|t| TEAMS[*t].map(str::to_string)).collect(),
                department: in_department.then(|| "icu".to_string()),
                workflows: WORKFLOWS
                    .iter()
                    .zip(&reach)
                    .map(|(w, (all, requester, assignee, team, department))| {
                        (w.to_string(), Reach { all: *all, requester: *requester, assignee: *assignee, team: *team, department: *department })
                    })
                    .collect(),
            };
            let all: Vec<Instance> = versions.keys().rev().map(|id| store.instance(id).unwrap().unwrap()).collect();
            let workflow = workflow.map(|w| WORKFLOWS[w].to_string());
            let state = state.map(|s| STATES[s].to_string());
            let in_list = |i: &Instance| v.allows(i) && workflow.as_ref().is_none_or(|w| &i.workflow == w) && state.as_ref().is_none_or(|s| &i.state == s);
            let expected: Vec<String> = all.iter().filter(|i| in_list(i)).map(|i| i.id.clone()).collect();
            let mut got = Vec::new();
            let mut f = InstanceFilter { workflow: workflow.clone(), state: state.clone(), limit, visibility: Some(v.clone()), ..Default::default() };
            loop {
                let page = store.instances(&f).unwrap();
                prop_assert!(page.items.len() <= limit);
                got.extend(page.items.iter().map(|i| i.id.clone()));
                match page.next {
                    Some(next) => f.before = Some(next),
                    None => break,
                }
            }
            prop_assert_eq!(&got, &expected);
            let mut counted: BTreeMap<(String, String, Option<String>), u64> = BTreeMap::new();
            for i in all.iter().filter(|i| v.allows(i) && workflow.as_ref().is_none_or(|w| &i.workflow == w)) {
                *counted.entry((i.workflow.clone(), i.state.clone(), i.assignment.team.clone())).or_default() += 1;
            }
            let kept: BTreeMap<_, _> = store.instance_counts_visible(workflow.as_deref(), &v).unwrap().into_iter().map(|c| ((c.workflow, c.state, c.team), c.count)).collect();
            prop_assert_eq!(kept, counted);
        }
    }
}

#[test]
fn a_store_written_before_the_index_gets_it_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RedbStore::open(dir.path()).unwrap();
        for id in ["a", "b", "c"] {
            store.commit(write(id, 0, "s1", None)).unwrap();
        }
    }
    {
        // As an older version left it: instances, but no index, counts or marker.
        let db = redb::Database::create(dir.path().join("flowform.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        tx.delete_table(redb::TableDefinition::<&str, &[u8]>::new("instance_index")).unwrap();
        tx.delete_table(redb::TableDefinition::<&str, &[u8]>::new("instance_counts")).unwrap();
        tx.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta")).unwrap().remove("instance_index").unwrap();
        tx.commit().unwrap();
    }
    let store = RedbStore::open(dir.path()).unwrap();
    let counts = store.instance_counts(Some("w")).unwrap();
    assert_eq!(counts, vec![InstanceCount { workflow: "w".into(), state: "s1".into(), team: Some("t".into()), count: 3 }]);
    let page = store.instances(&InstanceFilter { workflow: Some("w".into()), state: Some("s1".into()), limit: 10, ..Default::default() }).unwrap();
    assert_eq!(page.items.len(), 3);
}

/// Regression: one job's error failed the whole group commit of up to 511
/// unrelated jobs. Now the failing job fails alone, the others commit, and
/// the writer goes on.
#[test]
fn a_failing_job_fails_alone_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RedbStore::open(dir.path()).unwrap();
        let item = InboxItem {
            seq: 0,
            user: "li".into(),
            template: "t".into(),
            title: "t".into(),
            body: "b".into(),
            instance_id: None,
            at: tm("2026-01-01T00:00:00Z"),
            read: false,
        };
        store.submit(Job::Notify { inbox: vec![item], outbox: vec![], meta: ("k".into(), "v".into()) }).unwrap();
    }
    {
        // Corrupt the stored inbox item, as a bug or a bad disk might.
        let db = redb::Database::create(dir.path().join("flowform.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(redb::TableDefinition::<&str, &[u8]>::new("inbox")).unwrap();
            let key = redb::ReadableTable::iter(&t).unwrap().next().unwrap().unwrap().0.value().to_string();
            t.insert(key.as_str(), b"{not json".as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }
    let store = RedbStore::open(dir.path()).unwrap();
    let seq = 1;
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..20 {
        let sender = tx.clone();
        store.submit_then(Job::Command(Box::new(write(&format!("ok{i:02}"), 0, "s", None))), Box::new(move |o| sender.send((i, o)).unwrap()));
        if i == 10 {
            let sender = tx.clone();
            store.submit_then(Job::MarkRead { user: "li".into(), seq }, Box::new(move |o| sender.send((99, o)).unwrap()));
        }
    }
    drop(tx);
    let answers: Vec<(i32, Result<CommitOutcome>)> = rx.iter().collect();
    assert_eq!(answers.len(), 21);
    for (i, outcome) in &answers {
        match i {
            99 => assert!(outcome.is_err(), "the corrupt item's job fails"),
            _ => assert_eq!(outcome.as_ref().unwrap(), &CommitOutcome::Committed, "job {i} commits"),
        }
    }
    for i in 0..20 {
        assert!(store.instance(&format!("ok{i:02}")).unwrap().is_some());
    }
    assert_eq!(store.commit(write("after", 0, "s", None)).unwrap(), CommitOutcome::Committed, "the writer goes on");
}

/// Delivery reads only what is due, through an index kept with every write:
/// a failed attempt moves the message to its next time, a delivered or dead
/// one leaves the index.
#[test]
fn the_outbox_is_read_by_due_time_not_in_full() {
    let store = MemoryStore::new();
    let item = |seq: u64, next_at: &str| OutboxItem {
        seq,
        channel: "wecom".into(),
        url: "http://127.0.0.1:1/x".into(),
        body: "{}".into(),
        template: "t".into(),
        instance_id: None,
        created_at: tm("2026-01-01T00:00:00.000Z"),
        status: "pending".into(),
        attempts: 0,
        next_at: tm(next_at),
        last_error: None,
    };
    let notify = |items: Vec<OutboxItem>, mark: &str| Job::Notify { inbox: vec![], outbox: items, meta: (mark.into(), "1".into()) };
    store.submit(notify(vec![item(0, "2026-01-01T00:00:00.000Z")], "a")).unwrap();
    store.submit(notify(vec![item(0, "2026-01-01T05:00:00.000Z")], "b")).unwrap();
    let due = |now: &str| store.due_outbox(tm(now), 10).unwrap().iter().map(|i| i.next_at.to_string()).collect::<Vec<_>>();
    assert_eq!(due("2026-01-01T01:00:00.000Z"), vec!["2026-01-01T00:00:00.000Z"]);
    let first = store.due_outbox(tm("2026-01-01T01:00:00.000Z"), 10).unwrap()[0].seq;
    store.submit(Job::Delivery { seq: first, delivered: false, error: Some("down".into()), next_at: Some(tm("2026-01-01T02:00:00.000Z")) }).unwrap();
    assert!(due("2026-01-01T01:00:00.000Z").is_empty(), "moved to its next attempt");
    assert_eq!(due("2026-01-01T02:00:00.000Z"), vec!["2026-01-01T02:00:00.000Z"]);
    store.submit(Job::Delivery { seq: first, delivered: true, error: None, next_at: None }).unwrap();
    assert_eq!(due("2026-01-01T06:00:00.000Z"), vec!["2026-01-01T05:00:00.000Z"], "the delivered one left the index");
    // A dead letter, retried by an admin, is due again; a delivered one is not touched.
    let second = store.due_outbox(tm("2026-01-01T06:00:00.000Z"), 10).unwrap()[0].seq;
    store.submit(Job::Delivery { seq: second, delivered: false, error: Some("gone".into()), next_at: None }).unwrap();
    assert!(due("2026-01-02T00:00:00.000Z").is_empty(), "dead letters are not due");
    store.submit(Job::RetryDelivery { seq: second, at: tm("2026-01-02T00:00:00.000Z") }).unwrap();
    store.submit(Job::RetryDelivery { seq: first, at: tm("2026-01-02T00:00:00.000Z") }).unwrap();
    assert_eq!(due("2026-01-02T00:00:00.000Z"), vec!["2026-01-02T00:00:00.000Z"], "only the dead letter came back");
    let retried = store.outbox().unwrap().into_iter().find(|i| i.seq == second).unwrap();
    assert_eq!((retried.status.as_str(), retried.attempts), ("pending", 0));
}

/// Retention: delivered messages, notified ledger events and idempotency keys
/// past their cut-off go; pending messages, events not yet notified, and keys
/// without a time (written by older versions) stay.
#[test]
fn pruning_deletes_only_what_retention_lets_go() {
    let store = MemoryStore::new();
    let item = |status: &str, created_at: &str| OutboxItem {
        seq: 0,
        channel: "wecom".into(),
        url: "u".into(),
        body: "{}".into(),
        template: "t".into(),
        instance_id: None,
        created_at: tm(created_at),
        status: status.into(),
        attempts: 0,
        next_at: tm(created_at),
        last_error: None,
    };
    store.submit(Job::Notify { inbox: vec![], outbox: vec![item("pending", "2026-01-01T00:00:00.000Z")], meta: ("a".into(), "1".into()) }).unwrap();
    store.submit(Job::Notify { inbox: vec![], outbox: vec![item("pending", "2026-01-01T00:00:00.000Z")], meta: ("b".into(), "1".into()) }).unwrap();
    let first = store.outbox().unwrap()[0].seq;
    store.submit(Job::Delivery { seq: first, delivered: true, error: None, next_at: None }).unwrap();
    let old = |key: &str, at: Option<&str>| {
        let mut c = write(key, 0, "s", Some(key));
        c.event.at = tm(at.unwrap_or("2026-01-01T00:00:00.000Z"));
        c
    };
    store.commit(old("k_old", Some("2026-01-01T00:00:00.000Z"))).unwrap();
    store.commit(old("k_new", Some("2026-06-01T00:00:00.000Z"))).unwrap();
    let before = PruneBefore {
        outbox: Some(tm("2026-03-01T00:00:00.000Z")),
        ledger_events: Some(tm("2026-03-01T00:00:00.000Z")),
        idempotency: Some(tm("2026-03-01T00:00:00.000Z")),
    };
    assert_eq!(store.submit(Job::Prune { before, ledger_events_upto: 0 }).unwrap(), CommitOutcome::Sequence(2));
    let outbox = store.outbox().unwrap();
    assert_eq!(outbox.len(), 1, "the pending one stays");
    assert_eq!(outbox[0].status, "pending");
    assert!(store.idempotent("k_old").unwrap().is_none(), "an old key goes");
    assert!(store.idempotent("k_new").unwrap().is_some(), "a recent key stays");
}

/// Record counts and pages after any mix of creates, updates, archiving,
/// restoring and purges: the counts equal a scan, the pages joined equal the
/// scan in id order, and a reopened store keeps them.
fn record_counts_and_pages(store: &dyn Store) {
    use flowform_core::records::{Record, RecordEvent, RecordEventKind};
    let rec = |id: &str, version, archived| Record {
        record_type: "asset".into(),
        id: id.into(),
        version,
        title: id.into(),
        data: Map::new(),
        archived,
        created_at: Time::EPOCH,
        updated_at: Time::EPOCH,
    };
    let ev = |id: &str, seq| RecordEvent {
        record_type: "asset".into(),
        id: id.into(),
        seq,
        kind: RecordEventKind::Updated,
        actor: "a".into(),
        at: Time::EPOCH,
        cause: None,
        changes: BTreeMap::new(),
    };
    let mut seed: u64 = 11;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    for step in 0..400 {
        let id = format!("EQ-{:03}", next(40));
        let current = store.record("asset", &id).unwrap();
        let version = current.as_ref().map_or(0, |r| r.version);
        if step % 7 == 6 {
            if current.is_some() {
                let outcome = store.submit(Job::Purge { record_type: "asset".into(), id: id.clone(), expected_version: version }).unwrap();
                assert_eq!(outcome, CommitOutcome::Committed);
            }
            continue;
        }
        let archived = next(3) == 0;
        let rw =
            RecordWrite { record: rec(&id, version + 1, archived), expected_version: version, event: ev(&id, version + 1), refs: vec![], idempotency: None };
        if step % 5 == 4 {
            // Written by a command (a workflow's `update:`).
            let mut c = write(&format!("i{step}"), 0, "open", None);
            c.records = vec![rw];
            assert_eq!(store.submit(Job::Command(Box::new(c))).unwrap(), CommitOutcome::Committed);
        } else {
            assert_eq!(store.submit(Job::Record(Box::new(rw))).unwrap(), CommitOutcome::Committed);
        }
    }
    let all = store.records("asset").unwrap();
    let live: Vec<String> = all.iter().filter(|r| !r.archived).map(|r| r.id.clone()).collect();
    assert_eq!(store.record_counts("asset").unwrap(), (all.len() as u64, live.len() as u64));
    assert_eq!(store.record_counts("nothing").unwrap(), (0, 0));
    for (archived, expected) in [(false, live.clone()), (true, all.iter().map(|r| r.id.clone()).collect())] {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (page, more) = store.records_page("asset", after.as_deref(), 3, archived).unwrap();
            assert!(page.len() <= 3);
            seen.extend(page.iter().map(|r| r.id.clone()));
            if !more {
                break;
            }
            after = page.last().map(|r| r.id.clone());
        }
        assert_eq!(seen, expected, "archived: {archived}");
    }
}

#[test]
fn memory_store_keeps_record_counts_and_pages() {
    record_counts_and_pages(&MemoryStore::new());
}

#[test]
fn redb_store_keeps_record_counts_and_pages_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let counts = {
        let store = RedbStore::open(dir.path()).unwrap();
        record_counts_and_pages(&store);
        store.record_counts("asset").unwrap()
    };
    let store = RedbStore::open(dir.path()).unwrap();
    assert_eq!(store.record_counts("asset").unwrap(), counts, "counted once, not again at the next open");
}

/// Copies a store's files as they are on disk while it runs: what a
/// `kill -9` at this moment leaves behind.
fn crash_image(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to.join("wal")).unwrap();
    std::fs::copy(from.join("flowform.redb"), to.join("flowform.redb")).unwrap();
    for entry in std::fs::read_dir(from.join("wal")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "wal") {
            std::fs::copy(&p, to.join("wal").join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// The log's records: (segment, offset of the record, its end).
fn log_records(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64, u64)> {
    let mut segments: Vec<_> = std::fs::read_dir(dir.join("wal")).unwrap().map(|e| e.unwrap().path()).collect();
    segments.sort();
    let mut out = Vec::new();
    for s in segments {
        let bytes = std::fs::read(&s).unwrap();
        let mut at = 0usize;
        while at + 16 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            if len == 0 {
                break;
            }
            out.push((s.clone(), at as u64, (at + 16 + len) as u64));
            at += 16 + len;
        }
    }
    out
}

/// The torn-write test: acknowledged commands are in the log; a crash image
/// whose log is cut at a random offset (a torn last append: what follows is
/// zeros) opens with every command whose record lies before the cut, and the
/// rest wholly present or wholly absent — always a prefix of what was
/// acknowledged, never half of one. A byte damaged in the last record is a
/// torn append too; damaged in an earlier one, with good records after it,
/// it is not: the store refuses to open rather than lose them.
#[test]
fn a_log_torn_at_any_offset_opens_to_a_prefix_of_the_acknowledged_commands() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    let ids: Vec<String> = (0..40).map(|i| format!("i{i:02}")).collect();
    // One command per record: each waits for its acknowledgement.
    for id in &ids {
        assert_eq!(store.commit(write(id, 0, "open", Some(&format!("k-{id}")))).unwrap(), CommitOutcome::Committed);
        assert_eq!(store.commit(write(id, 1, "done", None)).unwrap(), CommitOutcome::Committed);
    }
    let image = tempfile::tempdir().unwrap();
    crash_image(dir.path(), image.path());
    drop(store);
    let records = log_records(image.path());
    assert!(records.len() >= ids.len() * 2, "one record per command: {}", records.len());
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..16 {
        let copy = tempfile::tempdir().unwrap();
        crash_image(image.path(), copy.path());
        let r = (next() as usize) % records.len();
        let (segment, start, end) = &records[r];
        let at = start + next() % (end - start);
        let segment = copy.path().join("wal").join(segment.file_name().unwrap());
        let f = std::fs::File::options().read(true).write(true).open(&segment).unwrap();
        let last = r + 1 == records.len();
        if round % 2 == 0 {
            // Cut: everything from the offset on is gone (zeros, as a preallocated segment holds).
            let len = f.metadata().unwrap().len();
            f.write_all_at(&vec![0u8; (len - at) as usize], at).unwrap();
        } else {
            // Damaged: one byte changed.
            let mut b = [0u8];
            f.read_at(&mut b, at).unwrap();
            f.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
        }
        drop(f);
        if round % 2 == 1 && !last {
            let refused = RedbStore::open(copy.path()).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(refused.contains("damaged before its end"), "round {round}: record {r} of {} damaged: {refused}", records.len());
            continue;
        }
        let reopened = RedbStore::open(copy.path()).unwrap();
        // Commands whose records precede the damaged one are there.
        let mut seen_missing = false;
        let mut command = 0;
        for id in &ids {
            for (version, state) in [(1u64, "open"), (2, "done")] {
                let inst = reopened.instance(id).unwrap();
                let present = inst.as_ref().is_some_and(|i| i.version >= version);
                // Records from the first two are the store's own (indexes); commands follow in order.
                let record = records.len() - ids.len() * 2 + command;
                if record < r {
                    assert!(present, "round {round}: {id} v{version} was before the damage (record {record} < {r})");
                }
                if !present {
                    seen_missing = true;
                } else {
                    assert!(!seen_missing, "round {round}: {id} v{version} is there after a missing command: not a prefix");
                    // Nothing half-applied: the event and the index agree with the instance.
                    let history = reopened.history(id).unwrap();
                    assert_eq!(history.len() as u64, inst.as_ref().unwrap().version, "round {round}: {id}");
                    if inst.as_ref().unwrap().version == version {
                        assert_eq!(inst.as_ref().unwrap().state, state);
                    }
                }
                command += 1;
            }
        }
        // The store goes on writing after the damage.
        assert_eq!(reopened.commit(write("after", 0, "open", None)).unwrap(), CommitOutcome::Committed);
        drop(reopened);
        assert!(RedbStore::open(copy.path()).unwrap().instance("after").unwrap().is_some());
    }
}

/// A torn last append, a restart that writes on, then a power cut that brings
/// back the old segment its deletion had not yet made durable: the later
/// segment goes on at the torn record's number, so the store opens with
/// everything acknowledged after the restart.
#[test]
fn a_torn_tail_followed_by_a_restart_and_more_writes_opens() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    for id in ["a", "b", "c"] {
        assert_eq!(store.commit(write(id, 0, "open", None)).unwrap(), CommitOutcome::Committed);
    }
    let image = tempfile::tempdir().unwrap();
    crash_image(dir.path(), image.path());
    drop(store);
    // The append of `c` tore.
    let records = log_records(image.path());
    let (segment, start, _) = records.last().unwrap().clone();
    let torn = image.path().join("wal").join(segment.file_name().unwrap());
    let f = std::fs::File::options().read(true).write(true).open(&torn).unwrap();
    f.write_all_at(&[0xff], start + 20).unwrap();
    drop(f);
    let kept = std::fs::read(&torn).unwrap();
    let reopened = RedbStore::open(image.path()).unwrap();
    assert!(reopened.instance("b").unwrap().is_some());
    for id in ["d", "e"] {
        assert_eq!(reopened.commit(write(id, 0, "open", None)).unwrap(), CommitOutcome::Committed);
    }
    let after = tempfile::tempdir().unwrap();
    crash_image(image.path(), after.path());
    drop(reopened);
    std::fs::write(after.path().join("wal").join(segment.file_name().unwrap()), kept).unwrap();
    let last = RedbStore::open(after.path()).unwrap();
    for id in ["a", "b", "d", "e"] {
        assert!(last.instance(id).unwrap().is_some(), "{id} was acknowledged");
    }
}

/// A log that does not go on from what the store holds (a store file put
/// back from an older copy beside a newer log) is refused, not replayed onto it.
#[test]
fn a_log_that_does_not_continue_the_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    assert_eq!(store.commit(write("a", 0, "open", None)).unwrap(), CommitOutcome::Committed);
    let old = tempfile::tempdir().unwrap();
    crash_image(dir.path(), old.path());
    drop(store);
    let store = RedbStore::open(dir.path()).unwrap();
    for id in ["b", "c"] {
        assert_eq!(store.commit(write(id, 0, "open", None)).unwrap(), CommitOutcome::Committed);
    }
    let newer = tempfile::tempdir().unwrap();
    crash_image(dir.path(), newer.path());
    drop(store);
    // The newer log beside a store file that holds less than the log starts from.
    std::fs::copy(old.path().join("flowform.redb"), newer.path().join("flowform.redb")).unwrap();
    let _ = std::fs::remove_dir_all(old.path().join("wal"));
    let opened = RedbStore::open(newer.path());
    let refused = opened.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("belongs to another copy"), "{refused}");
}

#[test]
fn events_and_instances_an_older_version_kept_as_json_read_the_same_and_are_rewritten_compactly_a_chunk_at_a_time() {
    use crate::tables::{Read as _, Table, Write as _, key, num};
    let store = MemoryStore::new();
    let mut written = Vec::new();
    for i in 0..3 {
        let id = format!("I{i}");
        for seq in 1..=3u64 {
            let mut e = write(&id, seq - 1, "s", None).event;
            e.input = json!({"note": format!("第{seq}次"), "n": seq});
            e.changes = BTreeMap::from([("note".into(), flowform_core::Change { before: json!(null), after: e.input["note"].clone() })]);
            store.tables.lock().unwrap().put(Table::Events, &key(&[&id, &num(seq)]), &serde_json::to_vec(&e).unwrap()).unwrap();
            written.push(e);
        }
        let mut inst = instance(&id, 3, "s");
        inst.data.insert("note".into(), json!("第3次"));
        store.tables.lock().unwrap().put(Table::Instances, &id, &serde_json::to_vec(&inst).unwrap()).unwrap();
    }
    // One that no version could read: it stays as it is and is reported when read.
    store.tables.lock().unwrap().put(Table::Events, &key(&["I9", &num(1)]), b"{\"seq\": oops").unwrap();
    let raw = |id: &str, seq: u64| store.tables.lock().unwrap().get(Table::Events, &key(&[id, &num(seq)])).unwrap().unwrap();
    for i in 0..3 {
        assert_eq!(store.history(&format!("I{i}")).unwrap(), written[i * 3..i * 3 + 3]);
    }
    assert!(codec::is_json(&raw("I0", 1)));
    let instances: Vec<Instance> = (0..3).map(|i| store.instance(&format!("I{i}")).unwrap().unwrap()).collect();
    assert_eq!(instances[2].data["note"], json!("第3次"));

    // A chunk of 4 events per job: 10 events take three jobs, then it is done.
    let mut looked = Vec::new();
    loop {
        match store.submit(Job::Compact { limit: 4 }).unwrap() {
            CommitOutcome::Sequence(0) => break,
            CommitOutcome::Sequence(n) => looked.push(n),
            other => panic!("{other:?}"),
        }
        assert!(looked.len() < 10, "it never ends: {looked:?}");
    }
    // Events: 10 in chunks of 4; then the 3 instances.
    assert_eq!(looked, [4, 4, 2, 3]);
    for i in 0..3 {
        let id = format!("I{i}");
        assert_eq!(store.history(&id).unwrap(), written[i * 3..i * 3 + 3], "{id} reads the same after the rewrite");
        for seq in 1..=3 {
            assert_eq!(raw(&id, seq)[0], codec::V2, "{id}/{seq} is compact");
        }
        assert_eq!(store.instance(&id).unwrap().as_ref(), Some(&instances[i]), "{id} reads the same after the rewrite");
        assert_eq!(store.tables.lock().unwrap().get(Table::Instances, &id).unwrap().unwrap()[0], codec::V2);
    }
    assert!(matches!(store.history("I9"), Err(StoreError::Corrupt { .. })));
    assert_eq!(&raw("I9", 1)[..], b"{\"seq\": oops");
    // Done is remembered: the next job looks at nothing.
    assert_eq!(store.submit(Job::Compact { limit: 4 }).unwrap(), CommitOutcome::Sequence(0));
}

#[test]
fn a_new_redb_store_has_no_events_to_convert_and_commands_write_them_compactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    assert_eq!(store.submit(Job::Compact { limit: 1 }).unwrap(), CommitOutcome::Sequence(0), "marked when opened empty");
    assert_eq!(store.commit(write("A", 0, "s", None)).unwrap(), CommitOutcome::Committed);
    let mut first = Vec::new();
    store
        .read(&mut |r| {
            first = r.get(crate::tables::Table::Events, &crate::tables::event_key("A", 1))?.unwrap_or_default();
            Ok(())
        })
        .unwrap();
    assert_eq!(first.first(), Some(&codec::V2));
    assert_eq!(store.history("A").unwrap(), vec![write("A", 0, "s", None).event]);
}

/// An instance whose first events an older version wrote (keys with the
/// number zero-padded to twenty digits, values in the first compact
/// layout or JSON) gets its next events under short keys, and its history
/// reads all of them in order.
#[test]
fn a_history_begun_under_the_old_event_keys_goes_on_under_the_short_ones_in_order() {
    use crate::tables::{Table, Write as _, event_key, key, num};
    // Events 1..=11 as an older version wrote them: (short key, old key, old bytes).
    let mut written = Vec::new();
    let mut old = Vec::new();
    for seq in 1..=11u64 {
        let e = write("A", seq - 1, "s", None).event;
        let bytes = if seq % 2 == 0 { serde_json::to_vec(&e).unwrap() } else { codec::tests::encode_event_v1(&e) };
        old.push((event_key("A", seq), key(&["A", &num(seq)]), bytes));
        written.push(e);
    }
    let more = |store: &dyn Store, written: &mut Vec<Event>| {
        for expected in [11, 12] {
            let w = write("A", expected, "s", None);
            written.push(w.event.clone());
            assert_eq!(store.commit(w).unwrap(), CommitOutcome::Committed);
        }
        assert_eq!(store.history("A").unwrap(), *written);
    };

    let memory = MemoryStore::new();
    for expected in 0..11 {
        memory.commit(write("A", expected, "s", None)).unwrap();
    }
    for (short, long, bytes) in &old {
        let mut t = memory.tables.lock().unwrap();
        t.delete(Table::Events, short).unwrap();
        t.put(Table::Events, long, bytes).unwrap();
    }
    more(&memory, &mut written.clone());

    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    for expected in 0..11 {
        store.commit(write("A", expected, "s", None)).unwrap();
    }
    drop(store);
    {
        let db = redb::Database::open(dir.path().join("flowform.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(redb::TableDefinition::<&str, &[u8]>::new("events")).unwrap();
            for (short, long, bytes) in &old {
                assert!(t.remove(short.as_str()).unwrap().is_some());
                t.insert(long.as_str(), bytes.as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let store = RedbStore::open(dir.path()).unwrap();
    assert_eq!(store.history("A").unwrap(), written, "the old keys read");
    more(&store, &mut written);
}

#[test]
fn the_conversion_reaches_the_instances_when_the_events_end_exactly_at_a_chunk_or_there_are_none() {
    use crate::tables::{Read as _, Table, Write as _, key, num};
    for events in [0u64, 4, 8] {
        let store = MemoryStore::new();
        for seq in 1..=events {
            let e = write("E", seq - 1, "s", None).event;
            store.tables.lock().unwrap().put(Table::Events, &key(&["E", &num(seq)]), &serde_json::to_vec(&e).unwrap()).unwrap();
        }
        let i = instance("I", 1, "s");
        store.tables.lock().unwrap().put(Table::Instances, "I", &serde_json::to_vec(&i).unwrap()).unwrap();
        let mut jobs = 0;
        while store.submit(Job::Compact { limit: 4 }).unwrap() != CommitOutcome::Sequence(0) {
            jobs += 1;
            assert!(jobs < 10);
        }
        let raw = store.tables.lock().unwrap().get(Table::Instances, "I").unwrap().unwrap();
        assert_eq!(raw[0], codec::V2, "with {events} events the instance is converted before the job says it is done");
        assert_eq!(store.instance("I").unwrap(), Some(i));
    }
}

/// A store the version before the compact format wrote (commit c8e771c: the
/// benchmark's five work orders through their whole lifecycle, parts
/// issued and returned) opens, reads, converts, and reads the same after.
#[test]
fn a_store_written_as_json_by_the_version_before_reads_the_same_after_its_conversion() {
    use crate::tables::Table;
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(&include_bytes!("../fixtures/json-store-c8e771c.redb.gz")[..]).read_to_end(&mut bytes).unwrap();
    std::fs::write(dir.path().join("flowform.redb"), bytes).unwrap();

    // Everything the store holds of instances and histories, as the API would show it.
    let snapshot = |store: &RedbStore| {
        let page = store.instances(&InstanceFilter { limit: 500, ..InstanceFilter::default() }).unwrap();
        assert!(page.next.is_none());
        page.items.iter().map(|i| (serde_json::to_string(i).unwrap(), serde_json::to_string(&store.history(&i.id).unwrap()).unwrap())).collect::<Vec<_>>()
    };
    let first_bytes = |store: &RedbStore, table: Table| {
        let mut firsts = Vec::new();
        store
            .read(&mut |r| {
                r.range(table, std::ops::Bound::Unbounded, std::ops::Bound::Unbounded, false, &mut |_, v| {
                    firsts.push(v[0]);
                    Ok(true)
                })
            })
            .unwrap();
        firsts
    };
    let store = RedbStore::open(dir.path()).unwrap();
    let before = snapshot(&store);
    assert_eq!(before.len(), 5);
    assert!(before.iter().all(|(i, h)| i.contains("\"state\":\"closed\"") && h.contains("\"transition\":\"request_parts\"")), "{before:?}");
    assert!(first_bytes(&store, Table::Events).iter().all(|b| *b == b'{'), "the fixture is JSON");
    while store.submit(Job::Compact { limit: 7 }).unwrap() != CommitOutcome::Sequence(0) {}
    drop(store);

    let store = RedbStore::open(dir.path()).unwrap();
    for table in [Table::Events, Table::Instances] {
        let firsts = first_bytes(&store, table);
        assert!(!firsts.is_empty() && firsts.iter().all(|b| *b == codec::V2), "{table:?}: {firsts:?}");
    }
    assert_eq!(snapshot(&store), before, "every instance and history reads the same, to the text");

    // Commands go on on an instance whose events that version wrote (keys
    // with twenty-digit numbers): its history reads in order, old then new.
    let page = store.instances(&InstanceFilter { limit: 1, ..InstanceFilter::default() }).unwrap();
    let old = &page.items[0];
    let mut expected = store.history(&old.id).unwrap();
    assert!(expected.len() >= 9, "the fixture's first order has {} events", expected.len());
    for v in old.version..old.version + 3 {
        let w = write(&old.id, v, "s", None);
        expected.push(w.event.clone());
        assert_eq!(store.commit(w).unwrap(), CommitOutcome::Committed);
    }
    drop(store);
    let store = RedbStore::open(dir.path()).unwrap();
    let seqs: Vec<u64> = store.history(&old.id).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=old.version + 3).collect::<Vec<_>>());
    assert_eq!(store.history(&old.id).unwrap(), expected);
}

/// A caller that finds the writer idle commits its job on its own thread
/// (no hand-off); a job queued earlier is never overtaken: while one waits
/// or the log is held, the job is given back to be queued behind it.
#[test]
fn a_job_commits_on_the_callers_thread_only_when_nothing_waits() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    // (The writer may still hold the log for a moment after answering.)
    let wait_idle = || {
        (0..2000).any(|_| {
            store.writer_idle() || {
                std::thread::sleep(std::time::Duration::from_millis(1));
                false
            }
        })
    };
    assert!(wait_idle(), "after the open's commit of one the writer is idle");
    let here = store.submit_here(Job::Command(Box::new(write("here", 0, "s", None))));
    assert!(matches!(here, Here::Done(Ok(CommitOutcome::Committed))), "an idle writer: committed here");
    assert!(store.instance("here").unwrap().is_some());

    // The log held (the writer busy): the job is given back, untouched.
    let held = store.hold_log();
    assert!(!store.writer_idle());
    let Here::Queue(Job::Command(back)) = store.submit_here(Job::Command(Box::new(write("second", 0, "s", None)))) else {
        panic!("a busy log must give the job back")
    };
    assert_eq!(back.instance.id, "second");
    drop(held);
    // A job waits in the queue (the writer holds back), the log is free:
    // a caller must still queue behind it, not overtake it.
    let (tx, rx) = std::sync::mpsc::channel();
    store.hold_back_writer(true);
    store.submit_then(Job::Command(back), Box::new(move |o| tx.send(o).unwrap()));
    let update = write("second", 1, "t", None);
    let Here::Queue(update) = store.submit_here(Job::Command(Box::new(update))) else { panic!("a queued job must not be overtaken") };
    assert_eq!(store.queued(), 1);
    let (tx2, rx2) = std::sync::mpsc::channel();
    store.submit_then(update, Box::new(move |o| tx2.send(o).unwrap()));
    store.hold_back_writer(false);
    // In order: the start, then the update that expects version 1.
    assert_eq!(rx.recv().unwrap().unwrap(), CommitOutcome::Committed);
    assert_eq!(rx2.recv().unwrap().unwrap(), CommitOutcome::Committed);
    assert_eq!(store.instance("second").unwrap().unwrap().state, "t");
    assert_eq!(store.queued(), 0);

    // Callers that came together (the last commit was a batch): the next
    // one joins the next batch instead of syncing alone first.
    let (tx, rx) = std::sync::mpsc::channel();
    store.hold_back_writer(true);
    for n in 0..3 {
        let tx = tx.clone();
        store.submit_then(Job::Command(Box::new(write(&format!("together{n}"), 0, "s", None))), Box::new(move |o| tx.send(o).unwrap()));
    }
    store.hold_back_writer(false);
    for _ in 0..3 {
        assert_eq!(rx.recv().unwrap().unwrap(), CommitOutcome::Committed);
    }
    assert!(!store.writer_idle(), "after a batch the writer is not offered as idle");
    let Here::Queue(alone) = store.submit_here(Job::Command(Box::new(write("alone", 0, "s", None)))) else { panic!("after a batch a job must queue") };
    // Queued alone it is a commit of one; the caller after it commits here again.
    assert_eq!(
        store
            .commit(match alone {
                Job::Command(c) => *c,
                _ => unreachable!(),
            })
            .unwrap(),
        CommitOutcome::Committed
    );
    assert!(wait_idle(), "after a commit of one the writer is offered as idle again");
    assert!(matches!(store.submit_here(Job::Command(Box::new(write("here again", 0, "s", None)))), Here::Done(Ok(CommitOutcome::Committed))));

    // A closed store commits nowhere.
    store.close();
    assert!(matches!(store.submit_here(Job::Command(Box::new(write("late", 0, "s", None)))), Here::Queue(_)));
    assert!(matches!(store.commit(write("late", 0, "s", None)), Err(StoreError::Closed)));
}

/// A panic while the log is held (on the writer's thread or a caller's)
/// stops the store: what the log holds is then unknown, so nothing more is
/// acknowledged and every later job is answered `Closed`.
#[test]
fn a_panic_while_committing_stops_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(dir.path()).unwrap());
    assert_eq!(store.commit(write("before", 0, "s", None)).unwrap(), CommitOutcome::Committed);
    let other = store.clone();
    let panicked = std::thread::spawn(move || {
        let _held = other.hold_log();
        panic!("a panic while committing (the test asked for it)");
    })
    .join();
    assert!(panicked.is_err());
    assert!(matches!(store.commit(write("after", 0, "s", None)), Err(StoreError::Closed)));
    let stopped = (0..2000).any(|_| {
        !store.healthy() || {
            std::thread::sleep(std::time::Duration::from_millis(1));
            false
        }
    });
    assert!(stopped, "the writer is shown down");
    drop(store);
    // Reopened, everything acknowledged is there.
    let store = RedbStore::open(dir.path()).unwrap();
    assert!(store.instance("before").unwrap().is_some());
    assert!(store.instance("after").unwrap().is_none());
}
