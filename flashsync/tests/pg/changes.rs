//! The change feed against a real Postgres, on every store: a subscriber
//! that starts with `changes_with_rows` while writers run and applies every
//! change it is handed ends with exactly the mirror's rows, for a plain, a
//! filtered and projected, and a keyless view; every group of changes is one
//! upstream commit, in commit order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::common::*;
use flashsync::{Engine, FeedItem, Persistence, Position, RowChange, ViewName};
use flashsync_core::{Identity, Key, Lsn, Row};
use flashsync_source_pg::testkit;

on_every_store!(a_subscriber_applying_every_change_ends_with_the_mirror);

/// The filtered, projected view: rows move in and out as writers change
/// `status` and `score`; it keeps three columns, the key in the middle.
const FILTER: &str = "status <> 'archived' AND score >= 50";
const COLUMNS: [&str; 3] = ["score", "id", "status"];

/// `bag (k, v)`: no key, `REPLICA IDENTITY FULL`, many identical rows.
const BAG_SETUP: &str = "CREATE TABLE bag (k bigint, v bigint);
     ALTER TABLE bag REPLICA IDENTITY FULL;
     INSERT INTO bag SELECT g % 40, g % 3 FROM generate_series(1, 1000) g;";

/// Empties both tables and fills them again, in one transaction (concurrent
/// writers wait for its lock).
const TRUNCATE_AND_REFILL: &str = "BEGIN;
     TRUNCATE t, bag;
     INSERT INTO t SELECT g, g % 5, CASE WHEN g % 4 = 0 THEN 'archived' ELSE 'open' END, (g * 13) % 100, 'again ' || g
       FROM generate_series(1, 2000) g;
     INSERT INTO bag SELECT g % 30, g % 2 FROM generate_series(1, 600) g;
     COMMIT;";

/// One view's rows as the subscriber keeps them: key → the rows under it
/// (one for a keyed view; the copies of a row for a keyless one, whose key
/// is the whole row).
#[derive(Debug)]
struct Followed {
    keyed: bool,
    key_cols: Vec<usize>,
    rows: BTreeMap<Key, Vec<Row>>,
    /// Changes applied, by kind: insert, update, delete, truncate.
    seen: [u64; 4],
}

impl Followed {
    async fn start(engine: &Engine, view: &ViewName, rows: Vec<Row>) -> Followed {
        let schema = engine.schema(&view.to_string()).await.unwrap_or_else(|e| panic!("schema of {view}: {e}"));
        let mut f = Followed {
            keyed: schema.identity == Identity::Key,
            key_cols: schema.key,
            rows: BTreeMap::new(),
            seen: [0; 4],
        };
        for r in rows {
            let k = Key(f.key_cols.iter().map(|&i| r.0[i].clone()).collect());
            f.rows.entry(k).or_default().push(r);
        }
        f
    }

    /// Applies one change; says what does not fit the rows held.
    fn apply(&mut self, change: &RowChange) -> Result<(), String> {
        match change {
            RowChange::Insert { key, row } => {
                self.seen[0] += 1;
                let own = Key(self.key_cols.iter().map(|&i| row.0[i].clone()).collect());
                if own != *key {
                    return Err(format!("insert under {key:?} of a row whose key is {own:?}"));
                }
                let held = self.rows.entry(key.clone()).or_default();
                if self.keyed && !held.is_empty() {
                    return Err(format!("insert of {key:?}, already held as {held:?}"));
                }
                held.push(row.clone());
            }
            RowChange::Update { key, row } => {
                self.seen[1] += 1;
                match self.rows.get_mut(key) {
                    Some(held) if held.len() == 1 => held[0] = row.clone(),
                    other => return Err(format!("update of {key:?}, held as {other:?}")),
                }
            }
            RowChange::Delete { key } => {
                self.seen[2] += 1;
                let Some(held) = self.rows.get_mut(key) else { return Err(format!("delete of {key:?}, not held")) };
                held.pop();
                if held.is_empty() {
                    self.rows.remove(key);
                }
            }
            RowChange::Truncate => {
                self.seen[3] += 1;
                self.rows.clear();
            }
        }
        Ok(())
    }

    fn sorted(&self) -> Vec<Row> {
        let mut all: Vec<Row> = self.rows.values().flatten().cloned().collect();
        all.sort();
        all
    }
}

/// What the subscriber task has seen.
#[derive(Default)]
struct Subscriber {
    views: HashMap<ViewName, Followed>,
    /// Commit LSNs of the `Changes` items, in the order they came.
    commits: Vec<Lsn>,
    /// Items other than `Changes` (a view copied again or forgotten).
    others: Vec<String>,
    /// The first things that went wrong (the test fails on any).
    problems: Vec<String>,
}

impl Subscriber {
    fn take(&mut self, item: FeedItem) {
        match item {
            FeedItem::Changes(c) => {
                match c.position {
                    Position::Commit { lsn, time: Some(_) } => {
                        if let Some(last) = self.commits.last().filter(|last| **last >= lsn) {
                            self.problems.push(format!("commit {lsn} came after commit {last}"));
                        }
                        self.commits.push(lsn);
                    }
                    other => self.problems.push(format!("changes at {other:?}, not a timed commit")),
                }
                for v in &c.views {
                    let Some(followed) = self.views.get_mut(&v.view) else {
                        self.problems.push(format!("changes of {}, a view the feed did not start with", v.view));
                        continue;
                    };
                    for change in &v.changes {
                        if let Err(e) = followed.apply(change) {
                            self.problems.push(format!("{}: {e}", v.view));
                        }
                    }
                }
            }
            FeedItem::Replaced { view, rows } => self.others.push(format!("{view} replaced ({} rows)", rows.len())),
            FeedItem::Forgotten { view } => self.others.push(format!("{view} forgotten")),
        }
    }
}

/// Writers insert, update (moving rows in and out of the filtered view),
/// change keys and delete, on a keyed and a keyless table; a subscriber
/// starts in the middle of it with `changes_with_rows`, and later a
/// transaction truncates and refills both tables. Once the writers stop and
/// the mirror has caught up, the subscriber's rows of each view are the
/// mirror's, which are upstream's.
async fn a_subscriber_applying_every_change_ends_with_the_mirror(kind: StoreKind) {
    let Some(db) = testkit::test_db("changes_feed").await else { return };
    let c = db.client().await;
    c.batch_execute(T_SETUP).await.unwrap();
    c.batch_execute(BAG_SETUP).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let probe = Probe::new(source_config(&db));
    let engine = open_engine(kind, dir.path(), probe.source()).await;
    engine.define(view("app", "t_all", Persistence::Realtime, "public", "t")).await.unwrap();
    let open_high = view("app", "open_high", Persistence::Realtime, "public", "t").with_filter(FILTER).unwrap();
    engine.define(open_high.with_columns(COLUMNS).unwrap()).await.unwrap();
    engine.define(view("app", "bag_all", Persistence::Realtime, "public", "bag")).await.unwrap();
    let summary = engine.sync("*").await.unwrap();
    assert_eq!(summary.realtime.len(), 3, "{summary:?}");

    let writers = Writers::default();
    writers.spawn(&db, 1, move_txn);
    writers.spawn(&db, 2, move_txn);
    writers.spawn(&db, 3, |rng| ((0..1 + rng.below(3)).map(|_| bag_op(rng)).collect(), 0));
    writers.wait_commits(200).await;

    // The subscriber starts while the writers run.
    let (start, mut feed) = engine.changes_with_rows("app.*").await.unwrap();
    let mut subscriber = Subscriber::default();
    for v in start {
        let followed = Followed::start(&engine, &v.view, v.rows).await;
        subscriber.views.insert(v.view, followed);
    }
    assert_eq!(subscriber.views.len(), 3, "the rows of every selected view come first");
    let subscriber = Arc::new(Mutex::new(subscriber));
    let consumer = {
        let subscriber = subscriber.clone();
        tokio::spawn(async move {
            while let Some(item) = feed.next().await {
                let mut s = subscriber.lock().unwrap();
                match item {
                    Ok(item) => s.take(item),
                    Err(e) => s.problems.push(format!("the feed failed: {e}")),
                }
            }
        })
    };

    writers.wait_commits(800).await;
    c.batch_execute(TRUNCATE_AND_REFILL).await.unwrap();
    writers.wait_commits(600).await;
    writers.stop().await;

    // The mirror catches up with upstream, then the subscriber with it.
    let views = [("app.t_all", "t", None), ("app.open_high", "t", Some(FILTER)), ("app.bag_all", "bag", None)];
    for (name, table, filter) in views {
        assert_converges_where(&engine, name, &c, "public", table, filter, WAIT).await;
    }
    for (name, _, _) in views {
        let view = ViewName::new("app", &name["app.".len()..]).unwrap();
        let mut mirror = engine.scan_all(name).await.unwrap();
        mirror.sort();
        let (s, view, mirror) = (&subscriber, &view, &mirror);
        wait_for(&format!("the subscriber's {name} to equal the mirror"), WAIT, move || async move {
            let s = s.lock().unwrap();
            assert!(s.problems.is_empty(), "the subscriber: {:#?}", &s.problems[..s.problems.len().min(10)]);
            (s.views[view].sorted() == *mirror).then_some(())
        })
        .await;
    }

    {
        let s = subscriber.lock().unwrap();
        assert!(s.problems.is_empty(), "{:#?}", s.problems);
        assert!(s.others.is_empty(), "no view was copied again or forgotten: {:?}", s.others);
        assert!(s.commits.len() >= 1000, "only {} commits reached the subscriber", s.commits.len());
        for (name, followed) in &s.views {
            let [inserts, updates, deletes, truncates] = followed.seen;
            assert!(inserts > 0 && deletes > 0, "{name}: {:?}", followed.seen);
            assert_eq!(truncates, 1, "{name}: the one TRUNCATE, once: {:?}", followed.seen);
            if followed.keyed {
                assert!(updates > 0, "{name}: {:?}", followed.seen);
            }
        }
        eprintln!(
            "change feed on {kind:?}: {} commits written, {} reached the subscriber; {:?}",
            writers.committed(),
            s.commits.len(),
            s.views.iter().map(|(v, f)| (v.to_string(), f.seen)).collect::<BTreeMap<_, _>>()
        );
    }
    assert_eq!(probe.snapshot_count(), 3, "each view copied once");
    engine.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, consumer).await.expect("the feed ends when the engine shuts down").unwrap();
}
