//! The executor's rules, each shown on [`Harness`]: the executor over the
//! memory store and upstream, with the test deciding what completes when.

use super::harness::{Harness, Pending};
use super::{Call, FeedCommand, StoreStep};
use crate::error::{StoreError, StoreErrorKind};
use crate::machine::Reply;
use crate::memory::{MemoryUpstream, TableIdentity};
use crate::selector::Selector;
use crate::view::{Persistence, ViewDef};
use crate::{row, Config};

/// A harness with one realtime view of `public.t`, synced and at rest.
fn live(config: Config) -> Harness {
    let up = MemoryUpstream::new();
    up.create_table("public", "t", &[("id", "int8"), ("v", "text")], TableIdentity::PrimaryKey(vec![0]));
    up.insert("public", "t", row![1_i64, "one"]);
    let mut h = Harness::new(up, config);
    let def = ViewDef::new("public", "t_live", Persistence::Realtime, "postgres:main", "public", "t").expect("def");
    h.call(Call::Define(def));
    h.call(Call::Sync { selector: Selector::All, force: false });
    assert!(h.settle(), "the view comes up");
    assert_eq!(h.verify_running(), 1);
    h
}

fn origin() -> crate::OriginId {
    crate::OriginId::new("postgres:main").expect("origin")
}

/// Reads every event the feed has (while it is not paused).
fn drain_feed(h: &mut Harness) {
    h.pump(usize::MAX);
}

fn applies(step: Option<&StoreStep<Box<dyn crate::Generation>>>) -> Vec<u64> {
    match step {
        Some(StoreStep::Apply(run)) => run.iter().map(|b| b.seq.0).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn shutdown_is_answered_only_once_everything_applied_is_durable() {
    let mut h = live(Config::default());
    for i in 2..6_i64 {
        h.up.insert("public", "t", row![i, "more"]);
    }
    drain_feed(&mut h);
    while h.held_step().is_some() {
        h.run_store();
    }
    let tag = h.call(Call::Shutdown);
    // Nothing persisted yet: the caller must not hear back.
    let mut persists = 0;
    while h.reply(tag).is_none() {
        assert!(h.persist_pending(), "shutdown waits, yet no persist is asked for");
        h.run_persist();
        persists += 1;
        assert!(persists < 4, "shutdown never answered");
    }
    assert_eq!(h.reply(tag), Some(&Reply::ShutDown));
    assert!(h.exec().is_finished());
    assert!(h.feed_commands().iter().any(|c| matches!(c, FeedCommand::Close { .. })), "the feed is closed on shutdown");
    // A crash right after loses nothing.
    h.store.crash();
    let id = h.machine().status(&Selector::All)[0].relation_id;
    assert_eq!(h.store.rows(id), h.up.rows("public", "t"));
}

#[test]
fn a_store_that_falls_behind_pauses_the_feed_until_it_catches_up() {
    let mut h = live(Config { max_ops_in_flight: 2, ..Config::default() });
    let mut txn = h.up.begin();
    for i in 2..6_i64 {
        txn.insert("public", "t", row![i, "big"]);
    }
    txn.commit();
    h.up.insert("public", "t", row![9_i64, "after"]);
    drain_feed(&mut h);
    // Four row operations wait for the store: more than two.
    assert!(
        h.exec().ops_in_flight() > 2 && h.exec().is_feed_paused(&origin()),
        "the feed keeps being read while the store is {} operations behind",
        h.exec().ops_in_flight()
    );
    assert!(matches!(h.feed_commands().last(), Some(FeedCommand::Pause { paused: true, .. })));
    // Reading stops: the later commit stays upstream.
    let applied = h.machine().stats().commits_applied;
    drain_feed(&mut h);
    while h.held_step().is_some() {
        h.run_store();
    }
    assert!(!h.exec().is_feed_paused(&origin()), "the feed resumes");
    assert!(matches!(h.feed_commands().last(), Some(FeedCommand::Pause { paused: false, .. })));
    assert!(h.settle());
    assert!(h.machine().stats().commits_applied > applied);
    assert_eq!(h.verify_running(), 1);
}

#[test]
fn batches_queued_behind_a_failed_one_never_reach_the_store() {
    let mut h = live(Config { apply_run: 1, ..Config::default() });
    h.up.insert("public", "t", row![2_i64, "two"]);
    h.up.insert("public", "t", row![3_i64, "three"]);
    drain_feed(&mut h);
    let first = applies(h.held_step());
    assert_eq!(first.len(), 1, "one batch per run: {first:?}");
    h.store.fail_next_apply(StoreError::new(StoreErrorKind::Io, "apply", "disk full"));
    h.run_store();
    assert!(!applies(h.held_step()).contains(&(first[0] + 1)), "the batch behind the failed one went to the store");
    // The machine recovers: the view is copied again and is exact.
    assert!(h.settle());
    assert_eq!(h.verify_running(), 1);
}

#[test]
fn consecutive_batches_go_to_the_store_as_one_run() {
    let mut h = live(Config { apply_run: 3, ..Config::default() });
    for i in 2..7_i64 {
        h.up.insert("public", "t", row![i, "x"]);
    }
    drain_feed(&mut h);
    // The first batch went alone (the store was idle); four queued behind it.
    assert_eq!(applies(h.held_step()).len(), 1);
    h.run_store();
    assert_eq!(applies(h.held_step()).len(), 3, "the next run holds apply_run batches");
    assert!(h.settle());
    assert_eq!(h.verify_running(), 1);
}

#[test]
fn a_persist_runs_one_at_a_time_and_again_for_batches_applied_meanwhile() {
    let mut h = live(Config::default());
    h.up.insert("public", "t", row![2_i64, "two"]);
    drain_feed(&mut h);
    h.run_store();
    assert!(h.persist_pending(), "an applied batch asks for a persist");
    // Another batch lands while that persist has not run.
    h.up.insert("public", "t", row![3_i64, "three"]);
    drain_feed(&mut h);
    h.run_store();
    h.run_persist();
    assert!(h.persist_pending(), "the batch applied meanwhile gets its own persist");
    h.run_persist();
    assert!(!h.pending().contains(&Pending::Persist));
}

/// WAL of tables no view reads moves the slot through keepalives; the live
/// views reflect that position too, so they do not look behind.
#[test]
fn unrelated_wal_moves_the_last_commit_a_live_view_has_seen() {
    let mut h = live(Config::default());
    let seen = |h: &Harness| h.machine().status(&Selector::All)[0].last_seen_commit;
    let before = seen(&h);
    h.up.create_table("public", "elsewhere", &[("id", "int8")], TableIdentity::PrimaryKey(vec![0]));
    h.up.insert("public", "elsewhere", row![1_i64]);
    h.up.keepalive(false);
    drain_feed(&mut h);
    assert!(h.settle(), "at rest after the keepalive");
    let after = seen(&h);
    assert!(after > before, "last_seen_commit stayed at {before:?} (now {after:?}) though the origin moved on");
}

/// A stopped realtime view needs no feed: with none left enabled, the
/// origin's feed (a walsender upstream) closes, and a resume opens it again.
#[test]
fn stopping_the_last_realtime_view_closes_the_feed_and_resuming_reopens_it() {
    let mut h = live(Config::default());
    assert!(h.up.feed_connected());
    h.call(Call::Stop(Selector::All));
    assert!(h.settle(), "at rest after stop");
    assert!(!h.up.feed_connected(), "the feed stayed open with no realtime view enabled");
    h.up.insert("public", "t", row![2_i64, "while stopped"]);
    h.call(Call::Resume(Selector::All));
    assert!(h.settle(), "at rest after resume");
    assert!(h.up.feed_connected(), "resume did not open the feed again");
    assert_eq!(h.verify_running(), 1, "the resumed view is exact");
}
