//! How the store lays its data out in the SQLite file: the bookkeeping
//! tables, the names of view and generation tables, and the encodings of the
//! records it keeps.
//!
//! | table | columns | holds |
//! |---|---|---|
//! | `_flashsync_meta` | `key` TEXT, `value` INTEGER | `format_version`; `store_id` (48 bits, see [`SqliteStore::store_id`](crate::SqliteStore::store_id)); `syncs` (a counter [`persist`](flashsync_core::Store::persist) bumps to fsync the log) |
//! | `_flashsync_views` | `relation_id`, `namespace`, `name`, `record` (JSON) | the catalog: [`ViewRecord`](flashsync_core::ViewRecord)s |
//! | `_flashsync_jobs` | `relation_id`, `record` (JSON) | [`JobRecord`](flashsync_core::JobRecord)s |
//! | `_flashsync_origins` | `origin`, `applied_lsn` | each origin's applied LSN |
//! | `_flashsync_copies` | `relation_id`, `table_name`, `schema` (JSON) | published copies: the table holding a view's rows and their [`RelationSchema`](flashsync_core::RelationSchema) |
//! | `_flashsync_columns` | `relation_id`, `position`, `name`, `sql_name`, `type_name`, `sql_type`, `helper`, `key_position` | the published copies' columns, for SQL readers: upstream name and type, SQL name and type, generated helper column |
//! | `_flashsync_dirty` | `relation_id`, `origin` | views left half-applied by the origin's unfinished transaction; `origin` NULL: diverged (no commit clears it) |
//! | `_flashsync_checkpoints` | `relation_id`, `table_name`, `generation`, `schema` (JSON) | unpublished generations kept across restarts by a [`checkpoint`](flashsync_core::Generation::checkpoint) (format version 2): the table, its number and its [`RelationSchema`](flashsync_core::RelationSchema); see [`checkpoint`](crate::checkpoint) |
//!
//! Relation ids and LSNs are `u64`s stored as the `i64` with the same bits
//! (SQLite integers are signed); ids and LSNs below 2^63 read as themselves.
//! Records are JSON, so `json_extract(record, '$.state')` works on them.
//!
//! The application id in the database header (`PRAGMA application_id`) marks
//! the file as a flashsync store and `PRAGMA user_version` holds the format
//! version. [`open`](crate::SqliteStore::open) migrates a store of an older
//! version in place (one durable transaction, see [`MIGRATIONS`]) and
//! refuses a newer one.

use flashsync_core::{Lsn, RelationId, StoreError, ViewName};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{corrupt, invalid};

/// The on-disk format this build writes and reads (`PRAGMA user_version`).
/// Bump it on any change a previous build could misread, with a migration
/// from the version before (see [`MIGRATIONS`]).
///
/// - 1: the first format.
/// - 2: `_flashsync_checkpoints`. A build of version 1 would drop the
///   tables it names when opening the store (every generation table was
///   unpublished garbage then), and a later build would then find a
///   checkpoint whose table was recreated under the same name with other
///   rows: such builds must refuse the file.
pub(crate) const FORMAT_VERSION: i64 = 2;

/// `PRAGMA application_id` of a flashsync store: "FSQL".
pub(crate) const APPLICATION_ID: i64 = 0x4653_514C;

pub(crate) const T_META: &str = "_flashsync_meta";
pub(crate) const T_VIEWS: &str = "_flashsync_views";
pub(crate) const T_JOBS: &str = "_flashsync_jobs";
pub(crate) const T_ORIGINS: &str = "_flashsync_origins";
pub(crate) const T_COPIES: &str = "_flashsync_copies";
pub(crate) const T_COLUMNS: &str = "_flashsync_columns";
pub(crate) const T_DIRTY: &str = "_flashsync_dirty";
pub(crate) const T_CHECKPOINTS: &str = "_flashsync_checkpoints";

/// Prefix of generation tables: `_flashsync_gen_<relation id>_<number>`.
pub(crate) const GEN_PREFIX: &str = "_flashsync_gen_";

/// The DDL of `_flashsync_checkpoints` (format version 2): shared by a new
/// store's [`SCHEMA_DDL`] and the migration from version 1, which `concat!`
/// both need as a literal. `table_name` is always the generation table of
/// `relation_id` numbered `generation` (checked at open: the store drops
/// that table, so a damaged row must never name another).
macro_rules! checkpoints_ddl {
    () => {
        "
CREATE TABLE _flashsync_checkpoints (
    relation_id INTEGER PRIMARY KEY,
    table_name TEXT NOT NULL UNIQUE,
    generation INTEGER NOT NULL,
    schema TEXT NOT NULL
);"
    };
}

/// The bookkeeping tables of a new store (the current format version),
/// created with the store in one transaction.
pub(crate) const SCHEMA_DDL: &str = concat!(
    "
CREATE TABLE _flashsync_meta (
    key TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE _flashsync_views (
    relation_id INTEGER PRIMARY KEY,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE _flashsync_jobs (
    relation_id INTEGER PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE _flashsync_origins (
    origin TEXT PRIMARY KEY NOT NULL,
    applied_lsn INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE _flashsync_copies (
    relation_id INTEGER PRIMARY KEY,
    table_name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    schema TEXT NOT NULL
);
CREATE TABLE _flashsync_columns (
    relation_id INTEGER NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    sql_name TEXT NOT NULL,
    type_name TEXT NOT NULL,
    sql_type TEXT NOT NULL,
    helper TEXT,
    key_position INTEGER,
    PRIMARY KEY (relation_id, position)
) WITHOUT ROWID;
CREATE TABLE _flashsync_dirty (
    relation_id INTEGER PRIMARY KEY,
    origin TEXT
);",
    checkpoints_ddl!(),
    "
INSERT INTO _flashsync_meta (key, value) VALUES ('format_version', 2), ('syncs', 0);
"
);

/// `MIGRATIONS[i]` takes a store of format version `i + 1` to `i + 2`. Run
/// at open inside the transaction that also sets `user_version`, so a crash
/// leaves the old version or the new one.
pub(crate) const MIGRATIONS: [&str; 1] =
    [concat!(checkpoints_ddl!(), "\nUPDATE _flashsync_meta SET value = 2 WHERE key = 'format_version';")];

/// Every bookkeeping table.
pub(crate) const TABLES: [&str; 8] = [T_META, T_VIEWS, T_JOBS, T_ORIGINS, T_COPIES, T_COLUMNS, T_DIRTY, T_CHECKPOINTS];

/// `ident` as one SQL identifier (double quotes, inner quotes doubled).
pub(crate) fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The SQLite table that holds a view's published copy: its qualified name
/// as one identifier (`"public.posts_live"`). Refused when SQLite would
/// refuse or misread it.
pub(crate) fn view_table(op: &str, name: &ViewName) -> Result<String, StoreError> {
    let table = format!("{}.{}", name.namespace, name.name);
    if table.contains('\0') {
        return Err(invalid(op, format!("view name {table:?} contains a NUL byte")));
    }
    // SQLite reserves these names for itself (and refuses to create them).
    if table.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("sqlite_")) {
        return Err(invalid(
            op,
            format!("view {table:?} cannot be a SQLite table: SQLite reserves names starting with \"sqlite_\""),
        ));
    }
    Ok(table)
}

/// The table a generation of `view` is written into before it is published.
pub(crate) fn generation_table(view: RelationId, number: u64) -> String {
    format!("{GEN_PREFIX}{}_{number}", view.0)
}

/// A relation id as SQLite stores it.
pub(crate) fn id_sql(id: RelationId) -> i64 {
    id.0 as i64
}

/// A relation id read back.
pub(crate) fn id_from_sql(v: i64) -> RelationId {
    RelationId(v as u64)
}

/// An LSN as SQLite stores it.
pub(crate) fn lsn_sql(lsn: Lsn) -> i64 {
    lsn.0 as i64
}

/// An LSN read back.
pub(crate) fn lsn_from_sql(v: i64) -> Lsn {
    Lsn(v as u64)
}

/// Encodes a record as JSON. Our records always serialize; an error here would
/// be a bug in a `Serialize` impl, reported rather than unwrapped.
pub(crate) fn encode_json<T: Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| invalid(format!("encode {what}"), e))
}

/// Decodes a JSON record read from disk; failure means damage.
pub(crate) fn decode_json<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("read {what}"), format!("undecodable record: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_quote_and_refuse_what_sqlite_would_misread() {
        assert_eq!(quote("public.posts"), "\"public.posts\"");
        assert_eq!(quote("we\"ird"), "\"we\"\"ird\"");
        let name = |ns: &str, n: &str| ViewName { namespace: ns.into(), name: n.into() };
        assert_eq!(view_table("t", &name("public", "posts")).ok().as_deref(), Some("public.posts"));
        assert!(view_table("t", &name("SQLite_x", "posts")).is_err());
        assert!(view_table("t", &name("public", "a\0b")).is_err());
        assert_eq!(generation_table(RelationId(4), 9), "_flashsync_gen_4_9");
        for big in [0, 1, u64::MAX, 1 << 63] {
            assert_eq!(id_from_sql(id_sql(RelationId(big))), RelationId(big));
            assert_eq!(lsn_from_sql(lsn_sql(Lsn(big))), Lsn(big));
        }
        assert!(decode_json::<flashsync_core::ViewRecord>("catalog entry", "{nope").is_err());
    }

    #[test]
    fn new_and_migrated_stores_record_the_current_format_version() {
        let version = |conn: &rusqlite::Connection| -> i64 {
            conn.query_row("SELECT value FROM _flashsync_meta WHERE key = 'format_version'", [], |r| r.get(0))
                .expect("format version")
        };
        let fresh = rusqlite::Connection::open_in_memory().expect("sqlite");
        fresh.execute_batch(SCHEMA_DDL).expect("create");
        assert_eq!(version(&fresh), FORMAT_VERSION);
        assert_eq!(MIGRATIONS.len() as i64, FORMAT_VERSION - 1, "one migration per version");
        // A version-1 store: the new store without what version 2 added.
        let old = rusqlite::Connection::open_in_memory().expect("sqlite");
        old.execute_batch(SCHEMA_DDL).expect("create");
        old.execute_batch(
            "DROP TABLE _flashsync_checkpoints; UPDATE _flashsync_meta SET value = 1 WHERE key = 'format_version'",
        )
        .expect("downgrade");
        for migration in MIGRATIONS {
            old.execute_batch(migration).expect("migrate");
        }
        assert_eq!(version(&old), FORMAT_VERSION);
        // Indexes SQLite makes for constraints have no SQL text.
        let tables = |conn: &rusqlite::Connection| -> Vec<(String, Option<String>)> {
            let mut stmt = conn.prepare("SELECT name, sql FROM sqlite_schema ORDER BY name").expect("schema");
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).and_then(|rows| rows.collect()).expect("schema")
        };
        assert_eq!(tables(&old), tables(&fresh), "a migrated store has the tables of a new one");
    }
}
