//! Reading the mirror: paged cursors in bounded pages (full-row copies
//! across page ends too) and typed reads.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use flashsync::{EngineError, KeyRange, Persistence};
use flashsync_core::memory::{MemoryStore, TableIdentity};
use flashsync_core::{key, row, Row};

#[tokio::test]
async fn paged_rows_equal_one_scan_for_any_page_size() {
    let up = upstream();
    up.create_table("public", "tags", &[("tag", "text"), ("n", "int8")], TableIdentity::Full);
    for i in 0..7 {
        up.insert("public", "tags", row!["same", 1]);
        up.insert("public", "tags", row![format!("t{i}"), i]);
    }
    for i in 0..23 {
        up.insert("public", "users", row![i, format!("u{i}")]);
    }
    let engine = engine(&up, MemoryStore::new()).await;
    engine.define(view("tags", Persistence::Materialized, "tags")).await.unwrap();
    engine.define(view("users", Persistence::Materialized, "users")).await.unwrap();
    engine.sync("*").await.unwrap();
    for name in ["public.tags", "public.users"] {
        let all = engine.scan_all(name).await.unwrap();
        for page in [1, 2, 3, 5, 8, 100] {
            let mut rows = engine.rows(name, KeyRange::default()).await.unwrap().page_size(page);
            let mut got: Vec<Row> = Vec::new();
            while let Some(r) = rows.next().await {
                got.push(r.unwrap());
            }
            assert_eq!(got, all, "{name} read {page} rows at a time");
        }
    }
    // A range: keys 5 <= id < 9.
    let range = KeyRange { start: Some(key![5]), end: Some(key![9]) };
    let mut rows = engine.rows("public.users", range).await.unwrap().page_size(3);
    let mut ids = Vec::new();
    while let Some(r) = rows.next_as::<(i64, String)>().await {
        ids.push(r.unwrap().0);
    }
    assert_eq!(ids, vec![5, 6, 7, 8]);
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn typed_reads_name_the_column_that_does_not_fit() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Wrong {
        id: i64,
        name: i64,
    }
    let up = upstream();
    up.insert("public", "users", row![1, "ada"]);
    let engine = engine(&up, MemoryStore::new()).await;
    engine.define(view("users", Persistence::Materialized, "users")).await.unwrap();
    engine.sync("*").await.unwrap();
    match engine.get_as::<Wrong>("public.users", &key![1]).await {
        Err(EngineError::Typed(e)) => assert!(e.to_string().contains("name"), "{e}"),
        other => panic!("expected a typed error, got {other:?}"),
    }
    assert!(engine.get_as::<(i64, String)>("public.users", &key![2]).await.unwrap().is_none());
    engine.shutdown().await.unwrap();
}
