//! Acceptance tests for the control surface on in-memory backends.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use flashsync::{EngineError, JobState, Persistence, Selector};
use flashsync_core::memory::MemoryStore;
use flashsync_core::{key, row};

#[tokio::test]
async fn materialize_copies_upstream_and_only_refetches_when_forced() {
    let up = upstream();
    for i in 0..50 {
        up.insert("public", "users", row![i, format!("user {i}")]);
    }
    let engine = engine(&up, MemoryStore::new()).await;
    engine.define(view("users_cache", Persistence::Materialized, "users")).await.unwrap();

    let summary = engine.sync("*").await.unwrap();
    assert_eq!(
        summary.materialized,
        vec!["public.users_cache"
            .parse::<Selector>()
            .map(|_| flashsync::ViewName::new("public", "users_cache").unwrap())
            .unwrap()]
    );
    assert!(summary.failed.is_empty() && summary.realtime.is_empty());
    assert_eq!(engine.scan_all("public.users_cache").await.unwrap(), up.rows("public", "users"));

    let status = engine.status("public.users_cache").await.unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].mode, Persistence::Materialized);
    assert_eq!(status[0].state, JobState::Synced);
    assert!(status[0].enabled);
    assert!(status[0].last_success_at.is_some());

    up.insert("public", "users", row![1000, "late"]);
    let again = engine.sync("*").await.unwrap();
    assert_eq!(again, summary, "a second plain sync reports the same");
    assert_eq!(up.stats().snapshots["public.users"], 1, "a second plain sync does not re-fetch");
    assert_eq!(engine.count("public.users_cache").await.unwrap(), 50);

    engine.sync_forced("*").await.unwrap();
    assert_eq!(up.stats().snapshots["public.users"], 2, "a forced sync re-fetches");
    assert_eq!(engine.scan_all("public.users_cache").await.unwrap(), up.rows("public", "users"));
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn realtime_mirrors_stops_and_resumes() {
    let up = upstream();
    up.insert("public", "posts", row![1, "first"]);
    let engine = engine(&up, MemoryStore::new()).await;
    engine.define(view("posts_live", Persistence::Realtime, "posts")).await.unwrap();

    let summary = engine.sync("*").await.unwrap();
    assert_eq!(summary.realtime.len(), 1);
    let st = &engine.status("public.posts_live").await.unwrap()[0];
    assert_eq!((st.state, st.enabled, st.mode), (JobState::Running, true, Persistence::Realtime));
    assert!(st.slot_id.is_some());

    let mirrors = |e: flashsync::Engine, up: flashsync_core::memory::MemoryUpstream| async move {
        wait_for("local copy to equal upstream", TIMEOUT, || {
            let (e, up) = (e.clone(), up.clone());
            async move { (e.scan_all("public.posts_live").await.ok()? == up.rows("public", "posts")).then_some(()) }
        })
        .await
    };
    up.insert("public", "posts", row![2, "second"]);
    up.update("public", "posts", key![1], row![1, "first, edited"]);
    up.delete("public", "posts", key![2]);
    up.insert("public", "posts", row![3, "third"]);
    mirrors(engine.clone(), up.clone()).await;
    assert_eq!(engine.scan_all("public.posts_live").await.unwrap(), vec![row![1, "first, edited"], row![3, "third"]]);

    let stopped = engine.stop("public.posts_live").await.unwrap();
    assert_eq!(stopped.len(), 1);
    let st = &engine.status("public.posts_live").await.unwrap()[0];
    assert_eq!((st.enabled, st.state), (false, JobState::Idle));
    let frozen = engine.scan_all("public.posts_live").await.unwrap();

    up.insert("public", "posts", row![4, "while stopped"]);
    up.keepalive(false);
    let summary = engine.sync("*").await.unwrap();
    assert_eq!(summary.disabled.len(), 1, "a plain sync leaves the disabled job alone");
    let st = &engine.status("public.posts_live").await.unwrap()[0];
    assert_eq!((st.enabled, st.state), (false, JobState::Idle));
    // The feed is still open; give it a round trip to prove nothing is applied.
    up.insert("public", "posts", row![5, "still stopped"]);
    engine.sync("*").await.unwrap();
    assert_eq!(engine.scan_all("public.posts_live").await.unwrap(), frozen, "stopped views apply nothing");

    let resumed = engine.resume("public.posts_live").await.unwrap();
    assert_eq!(resumed.realtime.len(), 1);
    let st = &engine.status("public.posts_live").await.unwrap()[0];
    assert_eq!((st.enabled, st.state), (true, JobState::Running));
    up.insert("public", "posts", row![6, "after resume"]);
    mirrors(engine.clone(), up.clone()).await;
    let rows = engine.scan_all("public.posts_live").await.unwrap();
    assert!(rows.contains(&row![4, "while stopped"]) && rows.contains(&row![6, "after resume"]));
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn overlapping_syncs_coalesce_into_two_passes() {
    let up = upstream();
    up.insert("public", "users", row![1, "a"]);
    let engine = engine(&up, MemoryStore::new()).await;
    engine.define(view("users_cache", Persistence::Materialized, "users")).await.unwrap();
    let before = engine.stats().await.unwrap().passes;

    let (a, b, c, d) = tokio::join!(engine.sync_forced("*"), engine.sync("*"), engine.sync("*"), engine.sync("*"));
    let (a, b, c, d) = (a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap());
    assert_eq!(
        engine.stats().await.unwrap().passes - before,
        2,
        "the first call runs a pass, the other three share one queued pass"
    );
    assert_eq!(up.stats().snapshots["public.users"], 1);
    assert!(a == b && b == c && c == d, "every caller gets the same summary: {a:?} {b:?}");
    assert_eq!(a.materialized.len(), 1);

    // A forced request that arrives while a pass runs is not lost.
    let (_, forced) = tokio::join!(engine.sync("*"), engine.sync_forced("*"));
    forced.unwrap();
    assert_eq!(up.stats().snapshots["public.users"], 2, "the queued forced request re-fetched");

    let before = engine.stats().await.unwrap().passes;
    let calls: Vec<_> = (0..10_000).map(|_| engine.sync("*")).collect();
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(|r| r.as_ref().is_ok_and(|s| s.materialized.len() == 1)));
    let passes = engine.stats().await.unwrap().passes - before;
    assert!(passes <= 2, "10,000 overlapping calls ran {passes} passes");
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn repeated_sync_opens_no_second_subscription() {
    let up = upstream();
    let engine = engine(&up, MemoryStore::new()).await;
    engine.define(view("posts_live", Persistence::Realtime, "posts")).await.unwrap();
    engine.define(view("users_live", Persistence::Realtime, "users")).await.unwrap();
    for _ in 0..20 {
        let s = engine.sync("*").await.unwrap();
        assert_eq!(s.realtime.len(), 2);
    }
    let stats = up.stats();
    assert_eq!(stats.subscribes, 1, "one subscription for the origin");
    assert_eq!(stats.max_active_feeds, 1);
    assert_eq!(stats.snapshots.values().sum::<u64>(), 2, "each view bootstrapped once");
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn missing_upstream_fails_with_backoff_while_others_succeed() {
    let up = upstream();
    up.insert("public", "users", row![1, "a"]);
    let engine = flashsync::Engine::builder()
        .store(MemoryStore::new())
        .origin("postgres:main", up.source())
        .config(flashsync::Config {
            retry_base: flashsync_core::Millis(60_000),
            retry_max: flashsync_core::Millis(3_600_000),
            ..Default::default()
        })
        .open()
        .await
        .unwrap();
    engine.define(view("ghost", Persistence::Materialized, "no_such_table")).await.unwrap();
    engine.define(view("users_cache", Persistence::Materialized, "users")).await.unwrap();

    let s = engine.sync("*").await.unwrap();
    assert_eq!(s.materialized.len(), 1, "the healthy view still succeeds");
    assert_eq!(s.failed.len(), 1);
    assert!(s.failed[0].1.contains("public.no_such_table"), "error names the relation: {}", s.failed[0].1);

    let st = engine.status("public.ghost").await.unwrap().remove(0);
    assert_eq!(st.state, JobState::Failed);
    assert!(st.last_error.as_deref().is_some_and(|e| e.contains("no_such_table")));
    assert_eq!(st.retry_count, 1);
    assert!(st.next_retry_at.is_some(), "a retry is scheduled");

    // A plain sync during back-off leaves it alone.
    engine.sync("*").await.unwrap();
    assert_eq!(engine.status("public.ghost").await.unwrap()[0].retry_count, 1);

    // Forced syncs retry at once; each attempt counts, and a missing
    // relation is a permanent failure: the next automatic retry is at least
    // `retry_permanent` (60 s by default) away. (Not "later than the last
    // one": jitter of up to a quarter of that floor may put it earlier.)
    for attempt in 2..=4 {
        let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        engine.sync_forced("public.ghost").await.unwrap();
        let st = engine.status("public.ghost").await.unwrap().remove(0);
        assert_eq!(st.retry_count, attempt);
        let next = st.next_retry_at.unwrap();
        assert!(next.0 >= before + 60_000, "attempt {attempt}: next retry {next:?} is less than 60 s after {before}");
    }

    // Once the relation exists, a forced sync succeeds and clears the error.
    up.create_table(
        "public",
        "no_such_table",
        &[("id", "int8")],
        flashsync_core::memory::TableIdentity::PrimaryKey(vec![0]),
    );
    let s = engine.sync_forced("public.ghost").await.unwrap();
    assert_eq!(s.materialized.len(), 1);
    let st = engine.status("public.ghost").await.unwrap().remove(0);
    assert_eq!((st.state, st.retry_count, st.last_error.clone()), (JobState::Synced, 0, None));
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn failed_views_retry_automatically() {
    let up = upstream();
    let engine = engine(&up, MemoryStore::new()).await;
    engine.define(view("later", Persistence::Realtime, "later")).await.unwrap();
    let s = engine.sync("*").await.unwrap();
    assert_eq!(s.failed.len(), 1);
    // Back-off is 20..200 ms here: the timer retries on its own.
    wait_for("three automatic attempts", TIMEOUT, || {
        let e = engine.clone();
        async move { (e.status("public.later").await.ok()?[0].retry_count >= 3).then_some(()) }
    })
    .await;
    up.create_table("public", "later", &[("id", "int8")], flashsync_core::memory::TableIdentity::PrimaryKey(vec![0]));
    up.insert("public", "later", row![1]);
    wait_for("the view to recover by itself", TIMEOUT, || {
        let e = engine.clone();
        async move { (e.status("public.later").await.ok()?[0].state == JobState::Running).then_some(()) }
    })
    .await;
    wait_for("the row", TIMEOUT, || {
        let e = engine.clone();
        async move { (e.count("public.later").await.ok()? == 1).then_some(()) }
    })
    .await;
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn selectors_select_and_malformed_ones_are_errors() {
    let up = upstream();
    let engine = engine(&up, MemoryStore::new()).await;
    for (name, table) in [("users_cache", "users"), ("posts_a", "posts"), ("posts_b", "posts")] {
        engine.define(view(name, Persistence::Materialized, table)).await.unwrap();
    }
    let names = |s: &flashsync::SyncSummary| s.materialized.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&engine.sync("*").await.unwrap()), ["posts_a", "posts_b", "users_cache"]);
    assert_eq!(names(&engine.sync("public.users_cache").await.unwrap()), ["users_cache"]);
    assert_eq!(names(&engine.sync("public.posts_*").await.unwrap()), ["posts_a", "posts_b"]);
    assert_eq!(
        names(&engine.sync(Selector::from_map([("public", ["posts_b", "users_cache"])]).unwrap()).await.unwrap()),
        ["posts_b", "users_cache"]
    );
    assert!(engine.sync("public.nope").await.unwrap().is_empty(), "unknown names select nothing");
    assert!(engine.status("other.*").await.unwrap().is_empty());
    // A bare name is in `public`.
    assert_eq!(names(&engine.sync("users_cache").await.unwrap()), ["users_cache"]);
    for bad in ["", "public.", ".x", "a.b,", "\"open"] {
        assert!(matches!(engine.sync(bad).await, Err(EngineError::Selector(_))), "{bad:?} must be a selector error");
        assert!(matches!(engine.stop(bad).await, Err(EngineError::Selector(_))));
    }
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_definitions_and_reads_are_errors() {
    let up = upstream();
    let engine = engine(&up, MemoryStore::new()).await;
    let unknown =
        flashsync::ViewDef::new("public", "x", Persistence::Realtime, "postgres:other", "public", "users").unwrap();
    assert!(matches!(engine.define(unknown).await, Err(EngineError::Definition(_))));
    assert!(flashsync::ViewDef::new("", "x", Persistence::Realtime, "postgres:main", "public", "users").is_err());
    assert!(flashsync::ViewDef::new(
        "p",
        &"x".repeat(10_000),
        Persistence::Realtime,
        "postgres:main",
        "public",
        "users"
    )
    .is_err());
    assert!(matches!(engine.scan_all("public.missing").await, Err(EngineError::UnknownView(_))));
    engine.define(view("users_cache", Persistence::Materialized, "users")).await.unwrap();
    assert!(matches!(engine.scan_all("public.users_cache").await, Err(EngineError::NoCopy(_))));
    assert!(matches!(engine.scan_all("public.*").await, Err(EngineError::Selector(_))));
    engine.shutdown().await.unwrap();
    assert!(matches!(engine.sync("*").await, Err(EngineError::ShutDown)));
}
