//! Bad input through the public API of the engine facade: every call returns
//! a typed error, promptly, and never panics or hangs. Also: an upstream
//! relation that vanishes in the middle of a sync fails that view only.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flashsync::{Config, Engine, EngineError, JobState, Key, KeyRange, Persistence, Selector, ViewDef, ViewName};
use flashsync_core::memory::{MemorySource, MemoryStore, MemoryUpstream, TableIdentity};
use flashsync_core::selector::MAX_SELECTOR_BYTES;
use flashsync_core::view::{MAX_NAME_BYTES, MAX_UPSTREAM_IDENT_BYTES};
use flashsync_core::{
    row, DefinitionError, Lsn, Millis, RelationSchema, RowSink, SelectorError, SnapshotPoint, Source, SourceError,
    Subscription, UpstreamRelation,
};

/// Every call here must answer well within this.
const PROMPT: Duration = Duration::from_secs(20);

/// Awaits `f`, failing the test if it takes longer than [`PROMPT`].
async fn prompt<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(PROMPT, f).await.unwrap_or_else(|_| panic!("{what} hung for {PROMPT:?}"))
}

fn upstream() -> MemoryUpstream {
    let up = MemoryUpstream::new();
    for t in ["users", "posts", "doomed"] {
        up.create_table("public", t, &[("id", "int8"), ("name", "text")], TableIdentity::PrimaryKey(vec![0]));
        up.insert("public", t, row![1, "one"]);
    }
    up
}

fn config() -> Config {
    Config { retry_base: Millis(20), retry_max: Millis(200), ..Config::default() }
}

async fn engine_with(source: impl Source) -> Engine {
    Engine::builder()
        .store(MemoryStore::new())
        .origin("postgres:main", source)
        .config(config())
        .seed(11)
        .open()
        .await
        .unwrap()
}

fn view(name: &str, persistence: Persistence, table: &str) -> ViewDef {
    ViewDef::new("public", name, persistence, "postgres:main", "public", table).unwrap()
}

fn is_selector_error(r: &Result<impl std::fmt::Debug, EngineError>) -> bool {
    matches!(r, Err(EngineError::Selector(_)))
}

#[tokio::test]
async fn malformed_selectors_are_selector_errors_on_every_call() {
    let up = upstream();
    let engine = engine_with(up.source()).await;
    engine.define(view("users_cache", Persistence::Materialized, "users")).await.unwrap();
    let long = "x".repeat(MAX_SELECTOR_BYTES + 1);
    let bad = [
        "",
        "   ",
        "public.",
        ".users_cache",
        "a..b",
        "a.b,",
        ",",
        "a.b,,c.d",
        "a.b c.d",
        "\"a.b",
        "\"\".x",
        "a.\"\"",
        "\u{0}",
        "public.\"unterminated",
        long.as_str(),
    ];
    for text in bad {
        let short: String = text.chars().take(40).collect();
        assert!(is_selector_error(&prompt("sync", engine.sync(text)).await), "sync({short:?})");
        assert!(is_selector_error(&prompt("sync_forced", engine.sync_forced(text)).await), "sync_forced({short:?})");
        assert!(is_selector_error(&prompt("status", engine.status(text)).await), "status({short:?})");
        assert!(is_selector_error(&prompt("stop", engine.stop(text)).await), "stop({short:?})");
        assert!(is_selector_error(&prompt("resume", engine.resume(text)).await), "resume({short:?})");
        assert!(is_selector_error(&prompt("forget", engine.forget(text)).await), "forget({short:?})");
    }
    assert!(matches!(engine.sync(long.as_str()).await, Err(EngineError::Selector(SelectorError::TooLong { .. }))));
    // Nothing was touched by any of it.
    assert_eq!(engine.status("*").await.unwrap().len(), 1);
    assert_eq!(engine.status("*").await.unwrap()[0].state, JobState::Idle);
    // Selectors that parse but match nothing are fine, not errors.
    assert!(engine.sync("nobody.*").await.unwrap().is_empty());
    assert!(engine.forget("nobody.here").await.unwrap().views.is_empty());
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn reads_with_bad_view_names_are_typed_errors() {
    let up = upstream();
    let engine = engine_with(up.source()).await;
    engine.define(view("users_cache", Persistence::Materialized, "users")).await.unwrap();
    let key = Key(vec![1i64.into()]);
    // A bare name is in `public` (`users_cache` is the view); these are not
    // one view's name at all.
    assert_eq!(engine.status("users_cache").await.unwrap()[0].name, "users_cache");
    for name in ["", "public.", "public.*", "*", "*.users_cache", "a.b,c.d", "\"public.users_cache"] {
        assert!(is_selector_error(&prompt("get", engine.get(name, &key)).await), "get({name:?})");
        assert!(is_selector_error(&prompt("count", engine.count(name)).await), "count({name:?})");
        let scan = prompt("scan", engine.scan(name, &KeyRange::default(), 10)).await;
        assert!(is_selector_error(&scan), "scan({name:?})");
    }
    // A well-formed name that is not defined.
    assert!(matches!(engine.count("public.nope").await, Err(EngineError::UnknownView(_))));
    // A name too long to be a view name at all.
    let long = format!("public.{}", "n".repeat(MAX_NAME_BYTES + 1));
    assert!(matches!(engine.count(&long).await, Err(EngineError::Definition(DefinitionError::TooLong { .. }))));
    // Defined but never synced: no copy yet.
    assert!(matches!(engine.scan_all("public.users_cache").await, Err(EngineError::NoCopy(_))));
    assert!(matches!(engine.get("public.users_cache", &key).await, Err(EngineError::NoCopy(_))));
    // Keys of the wrong shape, and ranges that are empty or inverted, on a
    // real copy: answers, not panics.
    engine.sync("*").await.unwrap();
    for key in [Key(vec![]), Key(vec!["text".into(), 2i64.into()]), Key(vec![f64::NAN.into()])] {
        assert_eq!(engine.get("public.users_cache", &key).await.unwrap(), None, "{key:?}");
    }
    let inverted = KeyRange { start: Some(Key(vec![10i64.into()])), end: Some(Key(vec![1i64.into()])) };
    assert!(engine.scan("public.users_cache", &inverted, 10).await.unwrap().is_empty());
    assert!(engine.scan("public.users_cache", &KeyRange::default(), 0).await.unwrap().is_empty());
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn definitions_with_bad_names_are_definition_errors() {
    let up = upstream();
    let engine = engine_with(up.source()).await;
    let long = "n".repeat(MAX_NAME_BYTES + 1);
    let long_upstream = "t".repeat(MAX_UPSTREAM_IDENT_BYTES + 1);
    let p = Persistence::Materialized;
    // The validating constructor refuses them...
    let refused = [
        ViewDef::new("", "v", p, "postgres:main", "public", "users"),
        ViewDef::new("public", "", p, "postgres:main", "public", "users"),
        ViewDef::new(&long, "v", p, "postgres:main", "public", "users"),
        ViewDef::new("public", &long, p, "postgres:main", "public", "users"),
        ViewDef::new("public", "a\nb", p, "postgres:main", "public", "users"),
        ViewDef::new("public", "v", p, "", "public", "users"),
        ViewDef::new("public", "v", p, "postgres main", "public", "users"),
        ViewDef::new("public", "v", p, &"o".repeat(129), "public", "users"),
        ViewDef::new("public", "v", p, "postgres:main", "", "users"),
        ViewDef::new("public", "v", p, "postgres:main", "public", ""),
        ViewDef::new("public", "v", p, "postgres:main", "public", &long_upstream),
        ViewDef::new("public", "v", p, "postgres:main", "public", "a\0b"),
    ];
    for (i, r) in refused.iter().enumerate() {
        assert!(r.is_err(), "definition {i} was accepted");
    }
    assert!(matches!("eventual".parse::<Persistence>(), Err(DefinitionError::UnknownPersistence(_))));
    // ...and so does the engine when a definition is built field by field,
    // bypassing the constructor.
    let good = view("ok", p, "users");
    let mut bad_defs = Vec::new();
    for (ns, name) in [("", "v"), ("public", ""), (long.as_str(), "v"), ("public", long.as_str()), ("p", "tab\tname")] {
        let mut d = good.clone();
        d.name = ViewName { namespace: ns.into(), name: name.into() };
        bad_defs.push(d);
    }
    for (schema, table) in [("", "t"), ("s", ""), ("s", long_upstream.as_str()), ("s\0", "t")] {
        let mut d = good.clone();
        d.upstream = UpstreamRelation { schema: schema.into(), table: table.into() };
        bad_defs.push(d);
    }
    for d in bad_defs {
        let r = prompt("define", engine.define(d.clone())).await;
        assert!(matches!(r, Err(EngineError::Definition(_))), "{:?} gave {r:?}", d.name);
    }
    // A huge but valid name works end to end.
    let max = "m".repeat(MAX_NAME_BYTES);
    let big = ViewDef::new(&max, &max, p, "postgres:main", "public", "users").unwrap();
    engine.define(big).await.unwrap();
    let summary = engine.sync(Selector::view(&ViewName::new(&max, &max).unwrap())).await.unwrap();
    assert_eq!(summary.materialized.len(), 1, "{summary:?}");
    assert!(engine.status("*").await.unwrap().iter().all(|s| s.name.len() <= MAX_NAME_BYTES));
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_and_invalid_origins_are_refused() {
    let up = upstream();
    let engine = engine_with(up.source()).await;
    let def = ViewDef::new("public", "v", Persistence::Realtime, "postgres:other", "public", "users").unwrap();
    let r = engine.define(def).await;
    assert!(matches!(r, Err(EngineError::Definition(DefinitionError::UnknownOrigin { .. }))), "{r:?}");
    assert!(engine.status("*").await.unwrap().is_empty(), "nothing was defined");
    engine.shutdown().await.unwrap();

    // An origin id that is not an origin id fails `open`, typed.
    for bad in ["", "postgres main", "pg/main", "ö", &"o".repeat(200)] {
        let r = Engine::builder().store(MemoryStore::new()).origin(bad, up.source()).open().await;
        assert!(matches!(r, Err(EngineError::Definition(_))), "origin {bad:?} gave {r:?}");
    }
    // No origin at all: the engine opens, and every definition is refused.
    let engine = Engine::builder().store(MemoryStore::new()).open().await.unwrap();
    let r = engine
        .define(ViewDef::new("public", "v", Persistence::Materialized, "postgres:main", "public", "users").unwrap())
        .await;
    assert!(matches!(r, Err(EngineError::Definition(DefinitionError::UnknownOrigin { .. }))), "{r:?}");
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn calls_after_shutdown_fail_promptly() {
    let up = upstream();
    let engine = engine_with(up.source()).await;
    engine.define(view("users_cache", Persistence::Materialized, "users")).await.unwrap();
    engine.shutdown().await.unwrap();
    engine.shutdown().await.unwrap();
    assert!(matches!(prompt("sync", engine.sync("*")).await, Err(EngineError::ShutDown)));
    assert!(matches!(prompt("status", engine.status("*")).await, Err(EngineError::ShutDown)));
    assert!(matches!(prompt("stop", engine.stop("*")).await, Err(EngineError::ShutDown)));
    assert!(matches!(prompt("resume", engine.resume("*")).await, Err(EngineError::ShutDown)));
    assert!(matches!(prompt("forget", engine.forget("*")).await, Err(EngineError::ShutDown)));
    let def = view("later", Persistence::Materialized, "users");
    assert!(matches!(prompt("define", engine.define(def)).await, Err(EngineError::ShutDown)));
    assert!(matches!(prompt("count", engine.count("public.users_cache")).await, Err(EngineError::ShutDown)));
    assert!(matches!(prompt("stats", engine.stats()).await, Err(EngineError::ShutDown)));
    // Malformed input is still reported as such (it never reaches the engine).
    assert!(matches!(engine.sync("a..b").await, Err(EngineError::Selector(_))));
}

/// What [`Vanishing`] does to its table, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DropAt {
    /// After `prepare` described it, before the snapshot.
    AfterPrepare,
    /// In the middle of the snapshot (after the first batch of rows).
    DuringSnapshot,
}

/// A memory source whose table `doomed` disappears mid-sync.
struct Vanishing {
    inner: MemorySource,
    at: DropAt,
}

/// Passes rows through; drops the table after the first batch.
struct DropAfterFirstBatch<'a> {
    sink: &'a mut dyn RowSink,
    up: MemoryUpstream,
    dropped: bool,
}

#[async_trait]
impl RowSink for DropAfterFirstBatch<'_> {
    async fn write(&mut self, rows: Vec<flashsync::Row>) -> Result<(), flashsync_core::StoreError> {
        self.sink.write(rows).await?;
        if !self.dropped {
            self.dropped = true;
            self.up.drop_table("public", "doomed");
        }
        Ok(())
    }
}

#[async_trait]
impl Source for Vanishing {
    async fn prepare(&self, relation: &UpstreamRelation, feed: bool) -> Result<RelationSchema, SourceError> {
        let schema = self.inner.prepare(relation, feed).await?;
        if self.at == DropAt::AfterPrepare && relation.table == "doomed" {
            self.inner.upstream().drop_table("public", "doomed");
        }
        Ok(schema)
    }

    async fn snapshot(
        &self,
        relation: &UpstreamRelation,
        shape: &flashsync_core::ViewShape,
        sink: &mut dyn RowSink,
    ) -> Result<SnapshotPoint, SourceError> {
        if self.at == DropAt::DuringSnapshot && relation.table == "doomed" {
            let mut sink = DropAfterFirstBatch { sink, up: self.inner.upstream().clone(), dropped: false };
            let point = self.inner.snapshot(relation, shape, &mut sink).await?;
            // The memory source copies from a consistent snapshot taken before
            // the first batch, as Postgres does; the drop shows on the next call.
            return Ok(point);
        }
        self.inner.snapshot(relation, shape, sink).await
    }

    async fn subscribe(&self, resume: Option<Lsn>) -> Result<Subscription, SourceError> {
        self.inner.subscribe(resume).await
    }

    async fn release(&self, relation: &UpstreamRelation) -> Result<(), SourceError> {
        self.inner.release(relation).await
    }

    async fn drop_feed(&self) -> Result<(), SourceError> {
        self.inner.drop_feed().await
    }
}

#[tokio::test]
async fn a_relation_dropped_between_prepare_and_snapshot_fails_that_view_only() {
    for persistence in [Persistence::Materialized, Persistence::Realtime] {
        let up = upstream();
        let engine = engine_with(Vanishing { inner: up.source(), at: DropAt::AfterPrepare }).await;
        engine.define(view("doomed_copy", persistence, "doomed")).await.unwrap();
        engine.define(view("users_copy", persistence, "users")).await.unwrap();
        let summary = prompt("sync", engine.sync("*")).await.unwrap();
        assert_eq!(summary.failed.len(), 1, "{persistence}: {summary:?}");
        assert_eq!(summary.failed[0].0.name, "doomed_copy");
        assert_eq!(summary.materialized.len() + summary.realtime.len(), 1, "{persistence}: {summary:?}");
        let status = engine.status("public.doomed_copy").await.unwrap();
        assert_eq!(status[0].state, JobState::Failed);
        let error = status[0].last_error.clone().unwrap_or_default();
        assert!(error.contains("doomed"), "{persistence}: last_error {error:?} does not name the relation");
        assert_eq!(engine.scan_all("public.users_copy").await.unwrap(), vec![row![1, "one"]]);
        // Retrying keeps failing cleanly (the table is gone), promptly.
        let again = prompt("forced sync", engine.sync_forced("public.doomed_copy")).await.unwrap();
        assert_eq!(again.failed.len(), 1, "{again:?}");
        engine.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_relation_dropped_during_its_snapshot_keeps_a_consistent_copy() {
    let up = upstream();
    let engine = engine_with(Vanishing { inner: up.source(), at: DropAt::DuringSnapshot }).await;
    engine.define(view("doomed_copy", Persistence::Materialized, "doomed")).await.unwrap();
    engine.define(view("users_copy", Persistence::Materialized, "users")).await.unwrap();
    let summary = prompt("sync", engine.sync("*")).await.unwrap();
    // The snapshot was consistent as of its start, so the copy is complete.
    assert_eq!(summary.materialized.len(), 2, "{summary:?}");
    assert_eq!(engine.scan_all("public.doomed_copy").await.unwrap(), vec![row![1, "one"]]);
    // A forced refresh now fails for the dropped table, and keeps the last
    // good copy.
    let again = prompt("forced sync", engine.sync_forced("*")).await.unwrap();
    assert_eq!(again.failed.len(), 1, "{again:?}");
    assert_eq!(again.materialized.len(), 1, "{again:?}");
    assert_eq!(engine.scan_all("public.doomed_copy").await.unwrap(), vec![row![1, "one"]]);
    assert_eq!(engine.status("public.doomed_copy").await.unwrap()[0].state, JobState::Failed);
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_running_realtime_view_whose_table_is_dropped_fails_alone() {
    let up = upstream();
    let engine = engine_with(up.source()).await;
    engine.define(view("doomed_live", Persistence::Realtime, "doomed")).await.unwrap();
    engine.define(view("users_live", Persistence::Realtime, "users")).await.unwrap();
    let summary = prompt("sync", engine.sync("*")).await.unwrap();
    assert_eq!(summary.realtime.len(), 2, "{summary:?}");
    up.drop_table("public", "doomed");
    // The other view keeps mirroring.
    up.insert("public", "users", row![2, "two"]);
    let deadline = tokio::time::Instant::now() + PROMPT;
    while engine.count("public.users_live").await.unwrap() != 2 {
        assert!(tokio::time::Instant::now() < deadline, "users_live stopped mirroring after another table was dropped");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Syncing again (forced, as after a reconnect) answers promptly and
    // covers both views; the other view is still running. (That the dropped
    // one is then still reported running is a known gap: see
    // `a_dropped_table_under_a_running_view_is_reported` below.)
    let again = prompt("forced sync", engine.sync_forced("*")).await.unwrap();
    assert_eq!(again.len(), 2, "{again:?}");
    assert!(again.realtime.iter().any(|v| v.name == "users_live"), "{again:?}");
    assert_eq!(engine.status("public.users_live").await.unwrap()[0].state, JobState::Running);
    // Forgetting it works, and releases nothing it cannot.
    let forgotten = prompt("forget", engine.forget("public.doomed_live")).await.unwrap();
    assert_eq!(forgotten.views.len(), 1);
    up.insert("public", "users", row![3, "three"]);
    let deadline = tokio::time::Instant::now() + PROMPT;
    while engine.count("public.users_live").await.unwrap() != 3 {
        assert!(tokio::time::Instant::now() < deadline, "users_live stopped mirroring after forget");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrent_bad_and_good_calls_do_not_interfere() {
    let up = upstream();
    let engine = engine_with(up.source()).await;
    engine.define(view("users_cache", Persistence::Materialized, "users")).await.unwrap();
    let engine = Arc::new(engine);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let e = engine.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                e.sync("*").await.map(|s| s.len())
            } else {
                e.sync("public..").await.map(|s| s.len())
            }
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let r = prompt("task", t).await.unwrap();
        if i % 2 == 0 {
            assert_eq!(r.unwrap(), 1);
        } else {
            assert!(matches!(r, Err(EngineError::Selector(_))));
        }
    }
    engine.shutdown().await.unwrap();
}

/// Known gap, in-memory upstream only: the Postgres source now reports a
/// relation that is dropped (or leaves the publication) as a schema change on
/// the feed, which fails the view (see flashsync-source-pg's feed tests), but
/// `flashsync_core::memory::MemoryUpstream::drop_table` (`memory/source.rs`)
/// removes the table silently, and a `sync()` — forced or not — reports a
/// `live` realtime view as `realtime` without asking the source again
/// (`machine/work.rs`, `begin_work`, `Phase::Live`). So on the reference
/// upstream the job stays `running` forever. Fix: have `drop_table` push a
/// `SchemaChanged` for the table's relation into the log when it is published,
/// as the Postgres source does.
#[tokio::test]

async fn a_dropped_table_under_a_running_view_is_reported() {
    let up = upstream();
    let engine = engine_with(up.source()).await;
    engine.define(view("doomed_live", Persistence::Realtime, "doomed")).await.unwrap();
    assert_eq!(engine.sync("*").await.unwrap().realtime.len(), 1);
    let mut events = engine.events();
    up.drop_table("public", "doomed");
    // The drop reaches the machine through the feed, on its own time: wait
    // until it has (the view reports an error), so the forced sync below
    // cannot race it.
    prompt("the feed to report the drop", async {
        loop {
            match events.recv().await {
                Ok(e) if matches!(e.kind, flashsync_core::EventKind::Error { .. }) => break,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    })
    .await;
    let again = prompt("forced sync", engine.sync_forced("*")).await.unwrap();
    assert_eq!(again.failed.len(), 1, "{again:?}");
    assert_eq!(engine.status("public.doomed_live").await.unwrap()[0].state, JobState::Failed);
    engine.shutdown().await.unwrap();
}
