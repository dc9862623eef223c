//! `flashsync query SQL`: the SQLite mirror read with SQL, on a read-only
//! connection of this process — beside a running `flashsync run`, which
//! keeps writing. Each statement reads one snapshot (SQLite's WAL mode), so
//! it sees whole upstream transactions only.

use std::io::Write;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value as Json};

use crate::config::{Config, StoreKind};
use crate::dump::{text_cell, text_row};
use crate::output::hex;
use crate::CliError;

pub fn query(config: &Config, sql: &str, json: bool) -> Result<(), CliError> {
    if config.store_kind != StoreKind::Sqlite {
        return Err(CliError(
            "`flashsync query` reads the SQLite store: set `store = \"sqlite:./mirror.db\"` in the config \
             (the fjall store is read with `flashsync dump` or the engine's API)"
                .into(),
        ));
    }
    if !config.store.exists() {
        return Err(CliError(format!(
            "no store at {} yet: `flashsync sync` or `flashsync run` creates it",
            config.store.display()
        )));
    }
    let failed = |what: &str, e: rusqlite::Error| CliError(format!("{what}: {e}"));
    // Read-only at the connection: whatever the statement says, nothing is
    // written (the store's own bookkeeping could not survive a stray write).
    let conn =
        Connection::open_with_flags(&config.store, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|e| failed(&format!("opening {}", config.store.display()), e))?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(|e| failed("setting the busy timeout", e))?;
    let mut stmt = conn.prepare(sql).map_err(|e| failed("the query", e))?;
    if !stmt.readonly() {
        return Err(CliError("`flashsync query` only reads: the statement would write".into()));
    }
    let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let mut rows = stmt.query([]).map_err(|e| failed("the query", e))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = (|| -> Result<(), CliError> {
        let io = |e: std::io::Error| CliError(format!("writing the rows: {e}"));
        if !json {
            let header: Vec<String> = columns.iter().map(|c| text_cell(c)).collect();
            writeln!(out, "{}", header.join("\t")).map_err(io)?;
        }
        while let Some(row) = rows.next().map_err(|e| failed("the query", e))? {
            let values: Vec<Json> = (0..columns.len())
                .map(|i| row.get_ref(i).map(value_json).map_err(|e| failed("reading a row", e)))
                .collect::<Result<_, _>>()?;
            if json {
                let obj: serde_json::Map<String, Json> = columns.iter().cloned().zip(values).collect();
                writeln!(out, "{}", Json::Object(obj)).map_err(io)?;
            } else {
                writeln!(out, "{}", text_row(&values, &[])).map_err(io)?;
            }
        }
        out.flush().map_err(io)
    })();
    match written {
        // The reader has gone (`… | head`): the end of the output.
        Err(CliError(m)) if m.contains("Broken pipe") => Ok(()),
        other => other,
    }
}

/// A SQLite value as JSON: integers and reals as numbers, text as strings,
/// blobs as `\x…` hex (as Postgres prints bytea).
fn value_json(v: ValueRef<'_>) -> Json {
    match v {
        ValueRef::Null => Json::Null,
        ValueRef::Integer(i) => json!(i),
        ValueRef::Real(f) => json!(f),
        ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => json!(hex(b)),
    }
}
