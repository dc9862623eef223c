//! The catalog side of the store, on the writer thread: loading the stored
//! state, and the small durable mutations (`put_view`, `put_job`, `forget`,
//! `forget_origin`).

use std::sync::Arc;

use flashsync_core::{
    JobRecord, OriginId, OriginProgress, RelationId, RelationSchema, StoreError, StoredState, ViewRecord,
};
use rusqlite::{params, Connection};

use crate::checkpoint;
use crate::error::{corrupt, invalid, sql};
use crate::layout::{self, decode_json, encode_json, id_from_sql, id_sql, quote};
use crate::writer::Writer;

/// Everything `Store::load` returns. It runs on the writer thread, so no
/// write is in progress and the parts agree (an origin's LSN and the dirty
/// markers of the same commit, say).
pub(crate) fn load(w: &mut Writer) -> Result<StoredState, StoreError> {
    let op = "load";
    w.check(op)?;
    let conn = &w.conn;
    let e = |e| sql(op, e);
    let mut out = StoredState { last_batch: w.last_seq, ..StoredState::default() };
    for (id, record) in
        text_records(conn, "SELECT relation_id, record FROM _flashsync_views ORDER BY relation_id").map_err(e)?
    {
        let view: ViewRecord = decode_json("catalog entry", &record)?;
        if view.relation_id != id {
            return Err(corrupt(op, format!("catalog entry {id} holds view {}", view.relation_id)));
        }
        out.views.push(view);
    }
    for (id, record) in
        text_records(conn, "SELECT relation_id, record FROM _flashsync_jobs ORDER BY relation_id").map_err(e)?
    {
        let job: JobRecord = decode_json("job record", &record)?;
        if job.relation_id != id {
            return Err(corrupt(op, format!("job record {id} is for view {}", job.relation_id)));
        }
        out.jobs.push(job);
    }
    let mut stmt = conn.prepare("SELECT origin, applied_lsn FROM _flashsync_origins ORDER BY origin").map_err(e)?;
    let origins = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(e)?;
    for (origin, lsn) in origins {
        let origin = OriginId::new(origin).map_err(|err| corrupt(op, format!("origin progress: {err}")))?;
        out.origins.push(OriginProgress { origin, applied: layout::lsn_from_sql(lsn) });
    }
    for (id, schema) in
        text_records(conn, "SELECT relation_id, schema FROM _flashsync_copies ORDER BY relation_id").map_err(e)?
    {
        out.schemas.push((id, decode_json::<RelationSchema>("published schema", &schema)?));
    }
    let mut stmt = conn.prepare("SELECT relation_id FROM _flashsync_dirty ORDER BY relation_id").map_err(e)?;
    out.dirty = stmt
        .query_map([], |r| r.get::<_, i64>(0).map(id_from_sql))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(e)?;
    Ok(out)
}

/// `(relation id, text)` pairs of a two-column query.
pub(crate) fn text_records(conn: &Connection, query: &str) -> rusqlite::Result<Vec<(RelationId, String)>> {
    let mut stmt = conn.prepare(query)?;
    let rows = stmt.query_map([], |r| Ok((id_from_sql(r.get(0)?), r.get::<_, String>(1)?)))?;
    rows.collect()
}

/// Inserts or replaces a catalog entry. A view whose name changed while it
/// has a published copy takes its table along (renamed in the same
/// transaction), so the table always carries the view's name.
pub(crate) fn put_view(w: &mut Writer, view: ViewRecord) -> Result<(), StoreError> {
    let id = view.relation_id;
    let op = format!("put view {id}");
    let record = encode_json("catalog entry", &view)?;
    let name = view.def.name.clone();
    let rename = match w.copies.get(&id) {
        Some(plan) => {
            let table = layout::view_table(&op, &name)?;
            // SQLite would refuse to rename a table to its own name in other
            // case, and finds it under either: the table keeps its name.
            if table.eq_ignore_ascii_case(&plan.table) {
                None
            } else {
                check_table_free(w, &op, id, &table)?;
                let renamed = plan.renamed(&table).map_err(|e| invalid(&op, e))?;
                Some((plan.table.clone(), Arc::new(renamed)))
            }
        }
        None => None,
    };
    w.transaction(&op, true, |conn| {
        let e = |e| sql(op.as_str(), e);
        if let Some((old, plan)) = &rename {
            conn.execute(&format!("ALTER TABLE {} RENAME TO {}", quote(old), quote(&plan.table)), []).map_err(e)?;
            conn.execute(
                "UPDATE _flashsync_copies SET table_name = ?2 WHERE relation_id = ?1",
                params![id_sql(id), plan.table],
            )
            .map_err(e)?;
        }
        conn.execute(
            "INSERT OR REPLACE INTO _flashsync_views (relation_id, namespace, name, record) VALUES (?1, ?2, ?3, ?4)",
            params![id_sql(id), name.namespace, name.name, record],
        )
        .map_err(e)?;
        Ok(())
    })?;
    w.catalog.insert(id, name);
    if let Some((_, plan)) = rename {
        w.copies.insert(id, plan);
    }
    Ok(())
}

/// Refuses a table name another view's published copy already has (SQLite
/// compares table names ignoring ASCII case, so `public.Users` and
/// `public.users` would be one table).
pub(crate) fn check_table_free(w: &Writer, op: &str, id: RelationId, table: &str) -> Result<(), StoreError> {
    match w.copies.iter().find(|(other, plan)| **other != id && plan.table.eq_ignore_ascii_case(table)) {
        Some((other, _)) => Err(invalid(
            op,
            format!("view {other}'s table is already named {table:?} (SQLite table names ignore ASCII case)"),
        )),
        None => Ok(()),
    }
}

/// Inserts or replaces a job record.
pub(crate) fn put_job(w: &mut Writer, job: JobRecord) -> Result<(), StoreError> {
    let op = format!("put job {}", job.relation_id);
    let record = encode_json("job record", &job)?;
    w.transaction(&op, true, |conn| {
        conn.execute(
            "INSERT OR REPLACE INTO _flashsync_jobs (relation_id, record) VALUES (?1, ?2)",
            params![id_sql(job.relation_id), record],
        )
        .map_err(|e| sql(op.as_str(), e))?;
        Ok(())
    })
}

/// Removes a view entirely: catalog entry, job, dirty marker, checkpoint,
/// published table, and the table of a checkpointed generation. Generations
/// being filled are dropped by their own handles (their publish fails: the
/// view is gone).
pub(crate) fn forget(w: &mut Writer, id: RelationId) -> Result<(), StoreError> {
    let op = format!("forget view {id}");
    let table = w.copies.get(&id).map(|plan| plan.table.clone());
    let checkpointed = checkpoint::orphaned_table(w, id);
    w.transaction(&op, true, |conn| {
        let e = |e| sql(op.as_str(), e);
        for t in [
            layout::T_VIEWS,
            layout::T_JOBS,
            layout::T_COPIES,
            layout::T_COLUMNS,
            layout::T_DIRTY,
            layout::T_CHECKPOINTS,
        ] {
            conn.execute(&format!("DELETE FROM {t} WHERE relation_id = ?1"), [id_sql(id)]).map_err(e)?;
        }
        for table in [&table, &checkpointed].into_iter().flatten() {
            conn.execute(&format!("DROP TABLE IF EXISTS {}", quote(table)), []).map_err(e)?;
        }
        Ok(())
    })?;
    w.catalog.remove(&id);
    w.copies.remove(&id);
    w.checkpoints.remove(&id);
    Ok(())
}

/// Removes an origin's progress.
pub(crate) fn forget_origin(w: &mut Writer, origin: OriginId) -> Result<(), StoreError> {
    let op = format!("forget origin {origin}");
    w.transaction(&op, true, |conn| {
        conn.execute("DELETE FROM _flashsync_origins WHERE origin = ?1", [origin.as_str()])
            .map_err(|e| sql(op.as_str(), e))?;
        Ok(())
    })
}
