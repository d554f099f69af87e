use super::*;
use flowform_core::{Assignment, EventKind};
use serde_json::{Map, json};
use std::collections::BTreeMap;
use std::sync::Arc;

fn instance(id: &str, version: u64, state: &str) -> Instance {
    Instance {
        id: id.into(),
        workflow: "w".into(),
        bundle_version: "b1".into(),
        version,
        state: state.into(),
        data: Map::new(),
        assignment: Assignment { team: Some("t".into()), ..Assignment::default() },
        requester: "u".into(),
        created_at: "2026-01-01T00:00:00Z".into(),
        updated_at: "2026-01-01T00:00:00Z".into(),
    }
}

fn write(id: &str, expected: u64, state: &str, key: Option<&str>) -> CommandWrite {
    let inst = instance(id, expected + 1, state);
    CommandWrite {
        event: Event {
            instance_id: id.into(),
            seq: expected + 1,
            kind: if expected == 0 { EventKind::Started } else { EventKind::Transition },
            transition: None,
            actor: "u".into(),
            at: "2026-01-01T00:00:00Z".into(),
            bundle_version: "b1".into(),
            from_state: None,
            to_state: state.into(),
            input: json!({}),
            changes: BTreeMap::new(),
        },
        instance: inst,
        expected_version: expected,
        idempotency: key.map(|k| IdempotencyKey { key: k.into(), fingerprint: "f".into() }),
    }
}

fn semantics(store: &dyn Store) {
    assert_eq!(store.commit(write("a", 0, "s1", Some("k1"))).unwrap(), CommitOutcome::Committed);
    assert!(matches!(store.commit(write("a", 0, "s1", Some("k1"))).unwrap(), CommitOutcome::Replay(r) if r.instance.id == "a"));
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
    let user = Actor { id: "nurse".into(), name: "Li".into(), roles: vec!["staff".into()], teams: vec![] };
    store.put_user(&user).unwrap();
    store.add_token("hash", "nurse").unwrap();
    assert_eq!(store.user_for_token("hash").unwrap(), Some(user));
    assert_eq!(store.user_for_token("other").unwrap(), None);
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
    assert_eq!(store.user_for_token("hash").unwrap().map(|u| u.id), Some("nurse".into()));
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

#[test]
fn auth_file_is_shared_with_another_handle() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    store.put_user(&Actor { id: "admin".into(), ..Actor::default() }).unwrap();
    assert_eq!(store.user_for_token("h2").unwrap(), None);
    // What `flowform token` does while the server holds the main file.
    let cli = RedbStore::auth_only(dir.path());
    assert!(cli.user("admin").unwrap().is_some());
    cli.add_token("h2", "admin").unwrap();
    assert_eq!(store.user_for_token("h2").unwrap().map(|u| u.id), Some("admin".into()));
}
