//! The change feed on in-memory backends: exact under continuous writes
//! (filtered, projected, full-row views, key changes, truncates, a
//! redefinition that re-copies a view), and a slow subscriber lags without
//! slowing sync down.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use common::*;
use flashsync::{Engine, FeedError, FeedItem, Persistence, RowChange, ViewName};
use flashsync_core::memory::{MemoryStore, MemoryUpstream, TableIdentity};
use flashsync_core::{key, row, Key, Row};

/// One view's rows as a subscriber keeps them: a map from key to its copies.
#[derive(Default, Debug, PartialEq)]
struct Rows {
    key_cols: Vec<usize>,
    rows: BTreeMap<Key, Vec<Row>>,
}

impl Rows {
    fn from(key_cols: Vec<usize>, rows: Vec<Row>) -> Rows {
        let mut out = Rows { key_cols, rows: BTreeMap::new() };
        for r in rows {
            let k = Key(out.key_cols.iter().map(|&i| r.0[i].clone()).collect());
            out.rows.entry(k).or_default().push(r);
        }
        out
    }

    fn apply(&mut self, change: &RowChange) {
        match change {
            RowChange::Insert { key, row } => self.rows.entry(key.clone()).or_default().push(row.clone()),
            RowChange::Update { key, row } => {
                let held = self.rows.get_mut(key).unwrap_or_else(|| panic!("update of {key:?}, not held"));
                *held = vec![row.clone()];
            }
            RowChange::Delete { key } => {
                let held = self.rows.get_mut(key).unwrap_or_else(|| panic!("delete of {key:?}, not held"));
                held.pop();
                if held.is_empty() {
                    self.rows.remove(key);
                }
            }
            RowChange::Truncate => self.rows.clear(),
        }
    }

    fn sorted(&self) -> Vec<Row> {
        let mut all: Vec<Row> = self.rows.values().flatten().cloned().collect();
        all.sort();
        all
    }
}

async fn key_cols(engine: &Engine, view: &ViewName) -> Vec<usize> {
    engine.schema(&view.to_string()).await.map(|s| s.key).unwrap_or_default()
}

fn upstream_with_tags() -> MemoryUpstream {
    let up = upstream();
    up.create_table("public", "tags", &[("tag", "text"), ("n", "int8")], TableIdentity::Full);
    up
}

/// A small deterministic generator, so a failure replays.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_applies_every_change_ends_with_the_mirror() {
    let up = upstream_with_tags();
    for i in 0..40 {
        up.insert("public", "users", row![i, if i % 3 == 0 { "ann" } else { "bob" }]);
    }
    up.insert("public", "tags", row!["x", 1]);
    up.insert("public", "tags", row!["x", 1]);
    let engine = engine(&up, MemoryStore::new()).await;
    engine.define(view("users_all", Persistence::Realtime, "users")).await.unwrap();
    let filtered = view("users_a", Persistence::Realtime, "users").with_filter("name LIKE 'a%'").unwrap();
    engine.define(filtered.with_columns(["id"]).unwrap()).await.unwrap();
    engine.define(view("tags_live", Persistence::Realtime, "tags")).await.unwrap();
    engine.sync("*").await.unwrap();

    let (start, mut feed) = engine.changes_with_rows("public.*").await.unwrap();
    let mut model: HashMap<ViewName, Rows> = HashMap::new();
    for v in start {
        let cols = key_cols(&engine, &v.view).await;
        model.insert(v.view, Rows::from(cols, v.rows));
    }
    assert_eq!(model.len(), 3, "the rows of every selected view come first");
    let model = Arc::new(Mutex::new(model));
    let replaced = Arc::new(Mutex::new(0usize));

    let consumer = {
        let (model, replaced, engine) = (model.clone(), replaced.clone(), engine.clone());
        tokio::spawn(async move {
            while let Some(item) = feed.next().await {
                match item.expect("the subscriber keeps up") {
                    FeedItem::Changes(c) => {
                        let mut m = model.lock().unwrap();
                        for v in &c.views {
                            let rows = m.get_mut(&v.view).expect("changes of a view the feed started with");
                            for change in &v.changes {
                                rows.apply(change);
                            }
                        }
                    }
                    FeedItem::Replaced { view, rows } => {
                        let cols = key_cols(&engine, &view).await;
                        model.lock().unwrap().insert(view, Rows::from(cols, rows));
                        *replaced.lock().unwrap() += 1;
                    }
                    FeedItem::Forgotten { view } => {
                        model.lock().unwrap().remove(&view);
                    }
                }
            }
        })
    };

    let mut rng = Lcg(42);
    for t in 0..600u64 {
        let mut txn = up.begin();
        for _ in 0..1 + rng.below(4) {
            let id = rng.below(60) as i64;
            let name = ["ann", "bob", "amy", "cy"][rng.below(4) as usize];
            match rng.below(10) {
                0..=2 => txn.insert("public", "users", row![id + 1000 * (t as i64 + 1), name]),
                3..=5 if up.rows("public", "users").iter().any(|r| r.0[0] == id.into()) => {
                    txn.update("public", "users", key![id], row![id, name])
                }
                6 if up.rows("public", "users").iter().any(|r| r.0[0] == id.into()) => {
                    // A key change.
                    txn.update("public", "users", key![id], row![id + 100_000 * (t as i64 + 1), name])
                }
                7 => txn.delete("public", "users", key![id]),
                8 => txn.insert("public", "tags", row![["x", "y"][rng.below(2) as usize], rng.below(2) as i64]),
                _ if t % 97 == 0 => txn.truncate(&[("public", "users")]),
                _ => txn.insert("public", "tags", row!["z", t as i64]),
            }
        }
        txn.commit();
        if t == 300 {
            // A redefinition copies the view again: the feed says so, with rows.
            let refiltered = view("users_a", Persistence::Realtime, "users").with_filter("name LIKE 'am%'").unwrap();
            engine.define(refiltered.with_columns(["id"]).unwrap()).await.unwrap();
            engine.sync("*").await.unwrap();
        }
        if t % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }

    // Writers stopped: wait for the mirror, then for the subscriber.
    wait_for("the mirror to catch up", TIMEOUT, || async {
        let mut users = up.rows("public", "users");
        users.sort();
        let mut local = engine.scan_all("public.users_all").await.ok()?;
        local.sort();
        (local == users).then_some(())
    })
    .await;
    for name in ["users_all", "users_a", "tags_live"] {
        let view = ViewName::new("public", name).unwrap();
        wait_for(&format!("the subscriber's {view} to equal the mirror"), TIMEOUT, || async {
            let mut local = engine.scan_all(&view.to_string()).await.ok()?;
            local.sort();
            let followed = model.lock().unwrap().get(&view).map(Rows::sorted)?;
            (followed == local).then_some(())
        })
        .await;
    }
    assert_eq!(*replaced.lock().unwrap(), 1, "the redefined view was replaced once");
    let tags = engine.count("public.tags_live").await.unwrap();
    assert!(tags > 2, "the full-row view got rows ({tags})");
    engine.shutdown().await.unwrap();
    consumer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_lags_and_sync_goes_on() {
    let up = upstream();
    let engine = flashsync::Engine::builder()
        .store(MemoryStore::new())
        .origin("postgres:main", up.source())
        .config(fast_config())
        .change_feed_capacity(4)
        .open()
        .await
        .unwrap();
    engine.define(view("users_all", Persistence::Realtime, "users")).await.unwrap();
    engine.sync("*").await.unwrap();
    let mut slow = engine.changes("public.users_all").await.unwrap();
    for i in 0..300 {
        up.insert("public", "users", row![i, "u"]);
        if i % 10 == 0 {
            // Let the engine apply as it goes: many store steps, not one run.
            wait_for("the mirror to keep up", TIMEOUT, || async {
                (engine.count("public.users_all").await.ok()? == i as u64 + 1).then_some(())
            })
            .await;
        }
    }
    wait_for("the mirror to hold every row", TIMEOUT, || async {
        (engine.count("public.users_all").await.ok()? == 300).then_some(())
    })
    .await;
    match slow.next().await {
        Some(Err(FeedError::Lagged { missed })) => assert!(missed > 0),
        other => panic!("a subscriber that stopped reading must lag, got {other:?}"),
    }
    // Starting again is exact: the rows now, then what follows.
    let (start, mut feed) = engine.changes_with_rows("public.users_all").await.unwrap();
    assert_eq!(start[0].rows.len(), 300);
    up.insert("public", "users", row![1000, "late"]);
    match feed.next().await {
        Some(Ok(FeedItem::Changes(c))) => {
            assert_eq!(c.views[0].changes, vec![RowChange::Insert { key: key![1000], row: row![1000, "late"] }]);
            assert!(matches!(c.position, flashsync::Position::Commit { time: Some(_), .. }));
        }
        other => panic!("expected the late insert, got {other:?}"),
    }
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_feed_reports_nothing_the_mirror_does_not_keep() {
    let up = upstream();
    up.insert("public", "users", row![1, "ann"]);
    let engine = engine(&up, MemoryStore::new()).await;
    let filtered = view("users_a", Persistence::Realtime, "users").with_filter("name LIKE 'a%'").unwrap();
    engine.define(filtered).await.unwrap();
    engine.sync("*").await.unwrap();
    let mut feed = engine.changes("*").await.unwrap();
    // Changes of rows the view never holds, then one it does.
    up.insert("public", "users", row![2, "bob"]);
    up.update("public", "users", key![2], row![2, "cy"]);
    up.delete("public", "users", key![2]);
    up.update("public", "users", key![1], row![1, "bob"]);
    match feed.next().await {
        Some(Ok(FeedItem::Changes(c))) => {
            assert_eq!(c.views.len(), 1);
            assert_eq!(c.views[0].changes, vec![RowChange::Delete { key: key![1] }], "only the move-out");
        }
        other => panic!("expected the move-out, got {other:?}"),
    }
    engine.shutdown().await.unwrap();
}
