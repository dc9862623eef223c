//! Property test: random interleavings of control calls, upstream commits and
//! feed cuts never break the machine's promises.
//!
//! Checked along the way: every state change is a legal transition for the
//! view's mode; a stopped view's local copy never changes while it stays
//! stopped; every control call returns (bounded time). Checked at the end,
//! after healing and a final `sync()`: every enabled view equals upstream.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use flashsync::{Engine, EventKind, JobState, Persistence, Row};
use flashsync_core::memory::{MemoryStore, MemoryUpstream, TxnHandle};
use flashsync_core::{key, row};
use proptest::prelude::*;

const VIEWS: [(&str, Persistence, &str); 4] = [
    ("users_rt", Persistence::Realtime, "users"),
    ("posts_rt", Persistence::Realtime, "posts"),
    ("users_mat", Persistence::Materialized, "users"),
    ("posts_rt2", Persistence::Realtime, "posts"),
];
const SELECTORS: [&str; 5] =
    ["*", "public.users_*", "public.posts_rt", "public.users_mat,public.posts_rt2", "public.posts_*"];

#[derive(Clone, Debug)]
enum Step {
    Sync { sel: usize, force: bool },
    Burst { sel: usize, n: usize },
    Stop(usize),
    Resume(usize),
    Forget(usize),
    Define(usize),
    Write { table: bool, kind: u8, key: i64 },
    OpenTxn { table: bool, key: i64 },
    CloseTxn,
    CutFeed,
    Keepalive,
    Settle,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..SELECTORS.len(), any::<bool>()).prop_map(|(sel, force)| Step::Sync { sel, force }),
        1 => (0..SELECTORS.len(), 2..40usize).prop_map(|(sel, n)| Step::Burst { sel, n }),
        2 => (0..SELECTORS.len()).prop_map(Step::Stop),
        2 => (0..SELECTORS.len()).prop_map(Step::Resume),
        1 => (0..SELECTORS.len()).prop_map(Step::Forget),
        2 => (0..VIEWS.len()).prop_map(Step::Define),
        10 => (any::<bool>(), 0..4u8, 0..12i64).prop_map(|(table, kind, key)| Step::Write { table, kind, key }),
        2 => (any::<bool>(), 0..12i64).prop_map(|(table, key)| Step::OpenTxn { table, key }),
        2 => Just(Step::CloseTxn),
        1 => Just(Step::CutFeed),
        1 => Just(Step::Keepalive),
        3 => Just(Step::Settle),
    ]
}

fn table(users: bool) -> &'static str {
    if users {
        "users"
    } else {
        "posts"
    }
}

fn write(up: &MemoryUpstream, users: bool, kind: u8, k: i64, tag: u64) {
    let t = table(users);
    let exists = up.rows("public", t).iter().any(|r| r.0[0] == flashsync::Value::Int(k));
    match (kind, exists) {
        (0, false) | (1, false) => {
            up.insert("public", t, row![k, format!("v{tag}")]);
        }
        (0, true) | (1, true) => {
            up.update("public", t, key![k], row![k, format!("v{tag}")]);
        }
        (2, true) => {
            up.delete("public", t, key![k]);
        }
        (3, _) => {
            up.truncate("public", t);
        }
        _ => {}
    }
}

async fn timed<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f).await.unwrap_or_else(|_| panic!("{what} did not return"))
}

async fn rows_of(engine: &Engine, name: &str) -> Option<Vec<Row>> {
    engine.scan_all(&format!("public.{name}")).await.ok()
}

async fn run(steps: Vec<Step>) {
    let up = upstream();
    let engine = engine(&up, MemoryStore::new()).await;
    let mut events = engine.events();
    let mut defined: BTreeSet<usize> = BTreeSet::new();
    for (i, (name, persistence, table)) in VIEWS.iter().enumerate() {
        engine.define(view(name, *persistence, table)).await.unwrap();
        defined.insert(i);
    }
    let mode: BTreeMap<String, Persistence> = VIEWS.iter().map(|(n, p, _)| ((*n).to_string(), *p)).collect();
    let mut frozen: BTreeMap<String, Option<Vec<Row>>> = BTreeMap::new();
    let mut open: Vec<TxnHandle> = Vec::new();
    let mut tag = 0u64;

    for step in steps {
        tag += 1;
        let mut exempt: BTreeSet<String> = BTreeSet::new();
        match step {
            Step::Sync { sel, force } => {
                let r = if force {
                    timed("sync_forced", engine.sync_forced(SELECTORS[sel])).await
                } else {
                    timed("sync", engine.sync(SELECTORS[sel])).await
                };
                r.unwrap();
            }
            Step::Burst { sel, n } => {
                let calls: Vec<_> = (0..n)
                    .map(|i| {
                        let e = engine.clone();
                        async move {
                            if i % 7 == 0 {
                                e.sync_forced(SELECTORS[sel]).await
                            } else {
                                e.sync(SELECTORS[sel]).await
                            }
                        }
                    })
                    .collect();
                let results = timed("burst", futures::future::join_all(calls)).await;
                assert!(results.iter().all(Result::is_ok));
            }
            Step::Stop(sel) => {
                timed("stop", engine.stop(SELECTORS[sel])).await.unwrap();
            }
            Step::Resume(sel) => {
                let resumed = timed("resume", engine.resume(SELECTORS[sel])).await.unwrap();
                exempt.extend(
                    resumed
                        .realtime
                        .iter()
                        .chain(&resumed.materialized)
                        .chain(resumed.failed.iter().map(|(n, _)| n))
                        .map(|n| n.name.clone()),
                );
                for st in engine.status(SELECTORS[sel]).await.unwrap() {
                    exempt.insert(st.name);
                }
            }
            Step::Forget(sel) => {
                let f = timed("forget", engine.forget(SELECTORS[sel])).await.unwrap();
                for v in f.views {
                    exempt.insert(v.name.clone());
                    if let Some(i) = VIEWS.iter().position(|(n, _, _)| *n == v.name) {
                        defined.remove(&i);
                    }
                }
            }
            Step::Define(i) => {
                timed("define", engine.define(view(VIEWS[i].0, VIEWS[i].1, VIEWS[i].2))).await.unwrap();
                defined.insert(i);
                exempt.insert(VIEWS[i].0.to_string());
            }
            Step::Write { table: t, kind, key } => write(&up, t, kind, key, tag),
            Step::OpenTxn { table: t, key } => {
                if open.len() < 3
                    && !up.rows("public", table(t)).iter().any(|r| r.0[0] == flashsync::Value::Int(1000 + key))
                {
                    let mut tx = up.begin();
                    tx.insert("public", table(t), row![1000 + key + 100 * tag as i64, format!("open{tag}")]);
                    open.push(tx);
                }
            }
            Step::CloseTxn => {
                if !open.is_empty() {
                    open.remove(0).commit();
                }
            }
            Step::CutFeed => up.cut_feed(),
            Step::Keepalive => up.keepalive(false),
            Step::Settle => {
                for _ in 0..20 {
                    tokio::task::yield_now().await;
                }
            }
        }
        // A stopped view's copy does not change while it stays stopped.
        for st in engine.status("*").await.unwrap() {
            if st.enabled || exempt.contains(&st.name) {
                frozen.remove(&st.name);
                continue;
            }
            let now = rows_of(&engine, &st.name).await;
            match frozen.get(&st.name) {
                Some(before) => assert_eq!(&now, before, "stopped view {} changed", st.name),
                None => {
                    frozen.insert(st.name.clone(), now);
                }
            }
        }
        // Every state change so far was legal.
        while let Ok(e) = events.try_recv() {
            if let (EventKind::StateChanged { from, to }, Some(v)) = (&e.kind, &e.view) {
                let m = mode[&v.name];
                assert!(JobState::is_legal(m, *from, *to), "illegal transition {from} -> {to} for {} ({m})", v.name);
            }
        }
    }

    // Heal: finish open transactions, then one final sync.
    for tx in open.drain(..) {
        tx.commit();
    }
    timed("final sync", engine.sync("*")).await.unwrap();
    for st in engine.status("*").await.unwrap() {
        if !st.enabled || st.persistence != Persistence::Realtime {
            continue;
        }
        let t = VIEWS.iter().find(|(n, _, _)| *n == st.name).map(|(_, _, t)| *t).unwrap();
        let name = st.name.clone();
        wait_for(&format!("realtime view {name} to converge"), Duration::from_secs(15), || {
            let (engine, up, name) = (engine.clone(), up.clone(), name.clone());
            async move {
                up.keepalive(false);
                let st = engine.status(format!("public.{name}")).await.ok()?.pop()?;
                let rows = rows_of(&engine, &name).await?;
                (st.state == JobState::Running && rows == up.rows("public", t)).then_some(())
            }
        })
        .await;
    }
    // Materialized views are current after a forced sync.
    timed("forced sync", engine.sync_forced("*")).await.unwrap();
    for st in engine.status("*").await.unwrap() {
        if st.enabled && st.persistence == Persistence::Materialized {
            let t = VIEWS.iter().find(|(n, _, _)| *n == st.name).map(|(_, _, t)| *t).unwrap();
            assert_eq!(
                rows_of(&engine, &st.name).await.unwrap(),
                up.rows("public", t),
                "materialized view {}",
                st.name
            );
        }
    }
    assert_eq!(up.stats().refused_subscriptions, 0, "never two feeds at once");
    engine.shutdown().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]
    #[test]
    fn random_interleavings_keep_every_promise(steps in proptest::collection::vec(step(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(steps));
    }
}
