//! Permanent failures: a wrong password or a missing table fails the view
//! with the reason in its status; neither the timer nor plain `sync()` calls
//! try again sooner than `retry_permanent` (a minute by default), so the
//! server is not hammered; a forced sync tries again at once.

use std::time::Duration;

use crate::common::*;
use flashsync::{Config, JobState, Persistence};
use flashsync_source_pg::{testkit, Secret};

/// How long the test watches for retries that must not happen (the default
/// back-off is a minute, the transient one starts at half a second).
const QUIET: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_not_retried_until_a_minute_passes_or_a_forced_sync() {
    let Some(db) = testkit::test_db("perm_password").await else { return };
    if db.conninfo.password.is_none() {
        eprintln!("skipped: the test server asks for no password");
        return;
    }
    db.client().await.batch_execute("CREATE TABLE acct (id bigint PRIMARY KEY)").await.unwrap();
    let mut config = source_config(&db);
    config.conn.password = Some(Secret::new("not-the-password"));
    let probe = Probe::new(config);
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine_with(StoreKind::Fjall, dir.path(), probe.clone(), Config::default()).await;
    engine.define(view("public", "acct_live", Persistence::Realtime, "public", "acct")).await.unwrap();

    let summary = engine.sync("*").await.unwrap();
    assert_eq!(summary.failed.len(), 1, "{summary:?}");
    let job = engine.status("public.acct_live").await.unwrap().remove(0);
    assert_eq!(job.state, JobState::Failed);
    let error = job.last_error.clone().unwrap_or_default();
    assert!(error.contains("password authentication failed"), "status does not say why: {error}");
    assert!(!error.contains("not-the-password"), "the password leaked into the status: {error}");
    let wait = job.next_retry_at.expect("a retry time").0.saturating_sub(job.updated_at.0);
    assert!(wait >= 59_000, "a wrong password is retried after {wait} ms");
    assert_eq!(probe.prepare_count(), 1);

    // Plain syncs and the passing of time do not log in again.
    tokio::time::sleep(QUIET / 2).await;
    engine.sync("*").await.unwrap();
    tokio::time::sleep(QUIET / 2).await;
    assert_eq!(probe.prepare_count(), 1, "logged in again within {QUIET:?}");

    // A forced sync tries at once (and fails again, for the same reason).
    let summary = engine.sync_forced("*").await.unwrap();
    assert_eq!(summary.failed.len(), 1, "{summary:?}");
    assert_eq!(probe.prepare_count(), 2, "a forced sync did not try again");
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_waits_for_a_forced_sync_once_it_exists() {
    let Some(db) = testkit::test_db("perm_missing").await else { return };
    let probe = Probe::new(source_config(&db));
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine_with(StoreKind::Fjall, dir.path(), probe.clone(), Config::default()).await;
    engine.define(view("public", "later_live", Persistence::Realtime, "public", "later")).await.unwrap();

    let summary = engine.sync("*").await.unwrap();
    assert_eq!(summary.failed.len(), 1, "{summary:?}");
    let job = engine.status("public.later_live").await.unwrap().remove(0);
    assert_eq!(job.state, JobState::Failed);
    let error = job.last_error.clone().unwrap_or_default();
    assert!(error.contains("later"), "status does not name the missing table: {error}");
    let wait = job.next_retry_at.expect("a retry time").0.saturating_sub(job.updated_at.0);
    assert!(wait >= 59_000, "a missing table is retried after {wait} ms");

    // The table appears; nothing notices by itself within the quiet period.
    db.client()
        .await
        .batch_execute("CREATE TABLE later (id bigint PRIMARY KEY); INSERT INTO later VALUES (1)")
        .await
        .unwrap();
    engine.sync("*").await.unwrap();
    tokio::time::sleep(QUIET).await;
    assert_eq!(probe.prepare_count(), 1, "retried a missing table before its back-off");
    assert_eq!(engine.status("public.later_live").await.unwrap()[0].state, JobState::Failed);

    // A forced sync tries at once and succeeds.
    let summary = engine.sync_forced("*").await.unwrap();
    assert_eq!(summary.realtime.len(), 1, "{summary:?}");
    engine.shutdown().await.unwrap();
}
