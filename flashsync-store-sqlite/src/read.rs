//! Reads of published copies, on the reader threads. Each read is one
//! SQLite read transaction: it looks up which table holds the view's copy
//! and reads it from the same snapshot, so it sees one committed point in
//! time — never part of a batch, never a table that a concurrent publish has
//! just replaced (WAL mode keeps the snapshot while the writer moves on).

use std::collections::HashMap;
use std::sync::Arc;

use flashsync_core::codec::encode_key;
use flashsync_core::{Key, KeyRange, RelationId, Row, StoreError};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::error::{corrupt, sql};
use crate::layout::{decode_json, id_sql};
use crate::table::Plan;
use crate::worker::Context;

/// A reader thread's connection (read-only) and the plans of the copies it
/// has read, keyed by view and checked against the stored record on use.
pub(crate) struct Reader {
    conn: Connection,
    plans: HashMap<RelationId, Cached>,
}

struct Cached {
    table: String,
    schema: String,
    plan: Arc<Plan>,
}

impl Context for Reader {
    fn recover(&mut self, _cause: &str) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.plans.clear();
    }
}

impl Reader {
    pub(crate) fn new(conn: Connection) -> Reader {
        Reader { conn, plans: HashMap::new() }
    }

    /// Runs `f` with the plan of `id`'s published copy inside one read
    /// transaction.
    fn with_copy<T>(
        &mut self,
        op: &str,
        id: RelationId,
        f: impl FnOnce(&Connection, &Plan) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Reader { conn, plans } = self;
        let tx = rusqlite::Transaction::new(conn, TransactionBehavior::Deferred).map_err(|e| sql(op, e))?;
        let record = tx
            .prepare_cached("SELECT table_name, schema FROM _flashsync_copies WHERE relation_id = ?1")
            .and_then(|mut s| {
                s.query_row([id_sql(id)], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).optional()
            })
            .map_err(|e| sql(op, e))?;
        let Some((table, schema)) = record else {
            return Err(StoreError::no_view(op, id));
        };
        let plan = match plans.get(&id) {
            Some(c) if c.table == table && c.schema == schema => Arc::clone(&c.plan),
            _ => {
                let parsed = decode_json("published schema", &schema)?;
                let plan = Arc::new(Plan::new(&table, &parsed).map_err(|e| corrupt(op, e))?);
                plans.insert(id, Cached { table, schema, plan: Arc::clone(&plan) });
                plan
            }
        };
        let out = f(&tx, &plan)?;
        // Nothing was written: finishing the transaction only releases the
        // snapshot.
        tx.finish().map_err(|e| sql(op, e))?;
        Ok(out)
    }

    /// One row by key.
    pub(crate) fn get(&mut self, id: RelationId, key: &Key) -> Result<Option<Row>, StoreError> {
        let op = format!("get from view {id}");
        let key = encode_key(key);
        self.with_copy(&op, id, |conn, plan| {
            let found = conn
                .prepare_cached(&plan.select_one)
                .and_then(|mut s| s.query_row([&key], |r| Ok(plan.decode(r))).optional())
                .map_err(|e| sql(op.as_str(), e))?;
            match found {
                None => Ok(None),
                Some(decoded) => Ok(Some(decoded.map_err(|e| damaged(&op, plan, e))?.0)),
            }
        })
    }

    /// Up to `limit` rows in key order, copies repeated.
    pub(crate) fn scan(&mut self, id: RelationId, range: &KeyRange, limit: usize) -> Result<Vec<Row>, StoreError> {
        let op = format!("scan view {id}");
        let start = range.start.as_ref().map(encode_key);
        let end = range.end.as_ref().map(encode_key);
        self.with_copy(&op, id, |conn, plan| {
            if limit == 0 {
                return Ok(Vec::new());
            }
            // Each stored row is at least one copy: `limit` rows of the table
            // are enough. -1 is SQLite's "no limit".
            let sql_limit = i64::try_from(limit).unwrap_or(-1);
            let mut stmt = conn.prepare_cached(plan.scan(start.is_some(), end.is_some())).map_err(|e| sql(&op, e))?;
            let mut params: Vec<rusqlite::types::Value> = Vec::with_capacity(3);
            params.extend(start.iter().map(|k| rusqlite::types::Value::Blob(k.clone())));
            params.extend(end.iter().map(|k| rusqlite::types::Value::Blob(k.clone())));
            params.push(rusqlite::types::Value::Integer(sql_limit));
            let mut rows = stmt.query(rusqlite::params_from_iter(params)).map_err(|e| sql(&op, e))?;
            let mut out = Vec::new();
            while let Some(r) = rows.next().map_err(|e| sql(&op, e))? {
                let (row, copies) = plan.decode(r).map_err(|e| damaged(&op, plan, e))?;
                for _ in 0..copies {
                    if out.len() >= limit {
                        return Ok(out);
                    }
                    out.push(row.clone());
                }
            }
            Ok(out)
        })
    }

    /// Number of rows, copies counted.
    pub(crate) fn count(&mut self, id: RelationId) -> Result<u64, StoreError> {
        let op = format!("count view {id}");
        self.with_copy(&op, id, |conn, plan| {
            let n: i64 = conn
                .prepare_cached(&plan.count)
                .and_then(|mut s| s.query_row([], |r| r.get(0)))
                .map_err(|e| sql(op.as_str(), e))?;
            u64::try_from(n).map_err(|_| corrupt(op.as_str(), format!("negative row count {n}")))
        })
    }
}

fn damaged(op: &str, plan: &Plan, detail: String) -> StoreError {
    corrupt(op, format!("row in table {:?}: {detail}", plan.table))
}

/// Opens a reader connection.
pub(crate) fn open_reader(path: &std::path::Path, options: &crate::Options, op: &str) -> Result<Reader, StoreError> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| sql(op, e))?;
    conn.busy_timeout(options.busy_timeout).map_err(|e| sql(op, e))?;
    conn.pragma_update(None, "cache_size", options.cache_size_pragma()).map_err(|e| sql(op, e))?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(Reader::new(conn))
}
