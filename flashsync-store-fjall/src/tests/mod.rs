//! Tests that need the store's internals: opening failures, damaged bytes,
//! locking across processes, and space reclamation.

mod amend;
mod corruption;
mod ingest;
mod open_errors;
mod reclaim;
mod resume;
mod staging;

use flashsync_core::{
    Column, JobRecord, Persistence, RelationId, RelationSchema, Row, SourceRelId, Store, StoreError, StoreErrorKind,
    Timestamp, ViewDef, ViewRecord,
};

use crate::{FjallStore, Options};

pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

pub(crate) fn open(path: &std::path::Path) -> Result<FjallStore, StoreError> {
    FjallStore::open(path, Options::default())
}

pub(crate) fn schema() -> RelationSchema {
    let columns = ["id", "name"].map(|n| Column { name: n.into(), type_name: "text".into() }).to_vec();
    RelationSchema::keyed(SourceRelId(1), columns, vec![0])
}

pub(crate) fn view(id: u64) -> ViewRecord {
    let def = ViewDef::new("test", &format!("v{id}"), Persistence::Materialized, "postgres:main", "public", "t")
        .expect("valid fixture");
    ViewRecord { relation_id: RelationId(id), def }
}

/// Defines view `id` and publishes `rows` as its copy.
pub(crate) async fn publish(store: &FjallStore, id: u64, rows: Vec<Row>) -> Result<(), StoreError> {
    let v = view(id);
    store.put_view(&v).await?;
    let mut generation = store.begin_generation(v.relation_id, &schema()).await?;
    generation.write(rows).await?;
    let job = JobRecord::new(v.relation_id, &v.def.name, v.def.persistence, Timestamp(1));
    generation.publish(&job).await
}

/// Asserts `result` failed with `kind`, showing the error otherwise.
pub(crate) fn assert_kind<T: std::fmt::Debug>(result: Result<T, StoreError>, kind: StoreErrorKind) -> StoreError {
    match result {
        Err(e) if e.kind == kind => e,
        other => panic!("expected a {kind:?} error, got {other:?}"),
    }
}
