//! Unit tests of the alert audit log (alerts.rs): order, bounds, fairness, sanitizing.

use super::*;

fn entry(code: &str, uid: u32) -> AlertEntry {
    AlertEntry {
        seq: 0,
        time: 1.5,
        request_id: Some("7".into()),
        plugin: "p".into(),
        severity: "warning".into(),
        code: code.into(),
        message: "m".into(),
        uid: Some(uid),
    }
}

fn open() -> (tempfile::TempDir, StateStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StateStore::open(dir.path()).expect("open");
    (dir, store)
}

fn codes_of(store: &StateStore, uid: u32) -> Vec<String> {
    store
        .recent_alerts(usize::MAX)
        .expect("read")
        .into_iter()
        .filter(|e| e.uid == Some(uid))
        .map(|e| e.code)
        .collect()
}

#[test]
fn log_is_ordered_and_bounded() {
    let (_dir, store) = open();
    store
        .append_alerts(&[entry("a", 1), entry("b", 1)])
        .expect("append");
    let got = store.recent_alerts(10).expect("read");
    assert_eq!(
        got.iter()
            .map(|e| (e.seq, e.code.as_str()))
            .collect::<Vec<_>>(),
        [(1, "a"), (2, "b")]
    );
    for i in 0..10 {
        store
            .append_alerts_within(&[entry(&i.to_string(), 1)], 5)
            .expect("append");
    }
    let tree = store.tree(ALERT_LOG_TREE).expect("tree");
    assert_eq!(tree.len(), 5);
    let all = store.recent_alerts(usize::MAX).expect("read all");
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [8, 9, 10, 11, 12]
    );
    assert_eq!(all[4].code, "9");
}

#[test]
fn one_request_adds_a_bounded_number_of_entries() {
    let (_dir, store) = open();
    // 1,000 identical alerts and 1,000 distinct ones from one request.
    let mut many: Vec<AlertEntry> = vec![entry("same", 1); 1000];
    many.extend((0..1000).map(|i| entry(&format!("c{i}"), 1)));
    store.append_alerts(&many).expect("append");
    let got = store.recent_alerts(usize::MAX).expect("read");
    assert_eq!(got.len(), ALERTS_PER_REQUEST);
    assert_eq!(got[0].code, "same");
    assert!(
        got[0].message.ends_with("(repeated 1000 times)"),
        "{}",
        got[0].message
    );
    let last = &got[ALERTS_PER_REQUEST - 1];
    assert_eq!(last.code, "alert_log.truncated");
    let kept = ALERTS_PER_REQUEST - 2;
    assert!(
        last.message
            .starts_with(&format!("{} more alerts", 1000 - kept)),
        "{}",
        last.message
    );
    assert_eq!((last.uid, last.request_id.as_deref()), (Some(1), Some("7")));
}

#[test]
fn a_flooding_user_evicts_only_their_own_entries() {
    let (_dir, store) = open();
    let capacity = 60;
    for i in 0..5 {
        store
            .append_alerts_within(&[entry(&format!("a{i}"), 1000)], capacity)
            .expect("append");
        store
            .append_alerts_within(&[entry(&format!("b{i}"), 1001)], capacity)
            .expect("append");
    }
    // Uid 6666 sends request after request, each with the most alerts a request may log.
    for r in 0..40 {
        let flood: Vec<AlertEntry> = (0..ALERTS_PER_REQUEST - 1)
            .map(|i| entry(&format!("f{r}.{i}"), 6666))
            .collect();
        store
            .append_alerts_within(&flood, capacity)
            .expect("append");
    }
    assert_eq!(codes_of(&store, 1000), ["a0", "a1", "a2", "a3", "a4"]);
    assert_eq!(codes_of(&store, 1001), ["b0", "b1", "b2", "b3", "b4"]);
    let flood = codes_of(&store, 6666);
    assert_eq!(flood.len(), capacity as usize - 10);
    assert_eq!(flood.last().map(String::as_str), Some("f39.30"));
    // When the log is full, a user with the largest share loses their oldest first.
    store
        .append_alerts_within(&[entry("a5", 1000)], capacity)
        .expect("append");
    assert_eq!(codes_of(&store, 1000).len(), 6);
    assert_eq!(codes_of(&store, 6666).len(), capacity as usize - 11);
}

#[test]
fn the_index_is_rebuilt_from_the_stored_log_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = StateStore::open(dir.path()).expect("open");
        for i in 0..3 {
            store
                .append_alerts_within(&[entry(&format!("a{i}"), 1000)], 10)
                .expect("append");
        }
    }
    let store = StateStore::reopen(dir.path());
    let flood: Vec<AlertEntry> = (0..20).map(|i| entry(&format!("f{i}"), 7)).collect();
    store.append_alerts_within(&flood, 10).expect("append");
    assert_eq!(codes_of(&store, 1000), ["a0", "a1", "a2"]);
    assert_eq!(codes_of(&store, 7).len(), 7);
}

#[test]
fn values_are_made_safe_when_stored_and_when_read() {
    let (_dir, store) = open();
    let mut poison = entry("code\0x", 1);
    poison.message = "m\0".repeat(1_000_000);
    poison.plugin = "p\0".into();
    store.append_alerts(&[poison]).expect("append");
    let tree = store.tree(ALERT_LOG_TREE).expect("tree");
    let stored = tree.get(1u64.to_be_bytes()).expect("get").expect("stored");
    assert!(stored.len() < 8 * 1024, "{} bytes stored", stored.len());
    // A record an older version stored whole, NULs included.
    let mut old = entry("old\0", 2);
    old.message = "\0".repeat(3_000_000);
    tree.insert(2u64.to_be_bytes(), json(&old)).expect("insert");
    for e in store.recent_alerts(10).expect("read") {
        for s in [&e.plugin, &e.code, &e.message, &e.severity] {
            assert!(!s.contains('\0'), "{s:?}");
        }
        assert!(e.code.len() <= limits::ALERT_CODE);
        assert!(e.message.len() <= limits::ALERT_MESSAGE);
    }
}
