//! Consistent snapshots: `COPY` of a relation inside a `REPEATABLE READ`
//! transaction whose visibility point is reported to the machine (DESIGN
//! §4.4) — the whole relation at once, or one chunk of its keys at a time
//! ([`take_chunk`]).

use std::cmp::Ordering;
use std::time::Duration;

use flashsync_core::codec::{decode_key, encode_key_value_into};
use flashsync_core::{
    ChunkEnd, CopiedChunk, EncodedRowsBuilder, Identity, Key, Lsn, RelationSchema, RowSink, SnapshotPoint, SourceError,
    SourceErrorKind, UpstreamRelation, Value, ValueRef, ViewShape,
};
use futures::{pin_mut, TryStreamExt};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::catalog;
use crate::copy_text::{for_each_field, CopyTextParser};
use crate::error;
use crate::ident::{qualified, quote_ident};
use crate::values::{oid, parse_text, Parsed};

/// Limits for one snapshot.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotLimits {
    /// Rows per sink batch.
    pub(crate) batch_rows: usize,
    /// Approximate bytes per sink batch.
    pub(crate) batch_bytes: usize,
    /// How often to retake a snapshot that raced with a commit.
    pub(crate) retries: u32,
}

/// Parses `pg_current_snapshot()` text: `xmin:xmax:xip,xip,...`.
pub(crate) fn parse_pg_snapshot(s: &str) -> Option<(u64, u64, Vec<u64>)> {
    let mut parts = s.splitn(3, ':');
    let xmin = parts.next()?.parse().ok()?;
    let xmax = parts.next()?.parse().ok()?;
    let xip = match parts.next()? {
        "" => Vec::new(),
        list => list.split(',').map(|x| x.parse().ok()).collect::<Option<Vec<u64>>>()?,
    };
    Some((xmin, xmax, xip))
}

/// Error type that lets the COPY parser's callback fail with a sink error.
enum RowError {
    Source(SourceError),
}

impl From<crate::copy_text::CopyTextError> for RowError {
    fn from(e: crate::copy_text::CopyTextError) -> Self {
        RowError::Source(error::protocol("reading COPY data", e))
    }
}

/// `text`'s type OID.
const TEXT_OID: u32 = 25;
/// `varchar`'s type OID.
const VARCHAR_OID: u32 = 1043;
/// `uuid`'s type OID.
const UUID_OID: u32 = 2950;

/// How a key column's values compare, for the key types a copy can be split
/// by: those whose Postgres order is provably the order of their
/// [`encode_key`](flashsync_core::codec::encode_key) bytes, which is how the
/// machine assigns feed changes to chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    /// `int2`, `int4`, `int8`: read as `Value::Int`, encoded sign-flipped
    /// big-endian, so byte order is numeric order — Postgres' order.
    Int,
    /// `text`, `varchar`: read as `Value::Text`, encoded as their UTF-8
    /// bytes then a terminator (`00 01`) below any byte a text holds (it
    /// holds no NUL), so encoded order is `memcmp` order, a prefix first:
    /// what `COLLATE "C"` compares, in a UTF-8 database (see `copy`).
    Text,
    /// `bytea`: read as `Value::Bytes`, encoded as its bytes with `00`
    /// escaped as `00 FF`, then `00 01`, which keeps `memcmp` order, a
    /// prefix first: what `bytea` comparison is.
    Bytes,
    /// `uuid`: read as `Value::Text` in its output form — 32 lowercase hex
    /// digits, dashes after the 8th, 12th, 16th and 20th — and encoded as
    /// text. Every value has the same length and its dashes in the same
    /// places, and the hex digits' ASCII order (`0`–`9` before `a`–`f`)
    /// is their value's order, so the encoded order is the order of the 16
    /// bytes: what `uuid` comparison (`memcmp`) is, in any collation.
    Uuid,
}

/// Which key types split, by type OID. Everything else is copied whole:
/// `numeric`, dates and times, `bool`, enums... are `Value::Text`
/// in their output form, whose byte order is not their order (`'10' <
/// '9'` and `'-1' < '-2'` as text; an enum orders by declaration), or not
/// provably so; `float`s would need NaN and -0 to agree; `bpchar` compares
/// without its trailing blanks while its output keeps them; `oid` and
/// domains are mapped by their own OID (a domain over `int4` is
/// `Value::Text`).
fn key_kind(type_oid: u32) -> Option<KeyKind> {
    match type_oid {
        oid::INT2 | oid::INT4 | oid::INT8 => Some(KeyKind::Int),
        TEXT_OID | VARCHAR_OID => Some(KeyKind::Text),
        oid::BYTEA => Some(KeyKind::Bytes),
        UUID_OID => Some(KeyKind::Uuid),
        _ => None,
    }
}

/// One column of the key a copy is split by.
#[derive(Clone, Debug, PartialEq, Eq)]
struct KeyColumn {
    name: String,
    kind: KeyKind,
}

impl KeyColumn {
    /// The column in the order of encoded keys: text compares as bytes
    /// (`pg_catalog."C"`, schema-qualified so no user collation named `C`
    /// can stand in), whatever the column's own collation.
    fn ordered(&self) -> String {
        match self.kind {
            KeyKind::Int | KeyKind::Bytes | KeyKind::Uuid => quote_ident(&self.name),
            KeyKind::Text => format!("{} COLLATE pg_catalog.\"C\"", quote_ident(&self.name)),
        }
    }

    /// The value to resume after, for the key position `i`, read back from
    /// the transaction-local setting it was bound to ([`bind_statement`]).
    /// Integers are compared as `int8` whatever the column's width: the
    /// comparison across integer widths is exact (and indexable), so no
    /// value can fail a cast to a narrower type. Bytes travel as hex.
    fn bound(&self, i: usize) -> String {
        let read = format!("pg_catalog.current_setting('{}')", bound_setting(i));
        match self.kind {
            KeyKind::Int => format!("{read}::pg_catalog.int8"),
            KeyKind::Text => format!("{read} COLLATE pg_catalog.\"C\""),
            KeyKind::Bytes => format!("pg_catalog.decode({read}, 'hex')"),
            KeyKind::Uuid => format!("{read}::pg_catalog.uuid"),
        }
    }
}

/// The key columns of `local` to split a copy by, if it has a key and every
/// column of it is of a [`KeyKind`]. (Text keys also need a UTF-8 database:
/// `copy` checks.)
fn split_key(local: &RelationSchema, type_oids: &[u32]) -> Option<Vec<KeyColumn>> {
    // Without a key (full-row identity) rows are not unique and no key
    // boundary exists; a multiset copy is not split.
    if local.identity != Identity::Key || local.key.is_empty() {
        return None;
    }
    local
        .key
        .iter()
        .map(|&i| Some(KeyColumn { name: local.columns.get(i)?.name.clone(), kind: key_kind(*type_oids.get(i)?)? }))
        .collect()
}

/// Name of the transaction-local setting holding the `i`th value of the key
/// to resume after. A custom setting needs a dotted name; it is set with
/// `is_local`, so it vanishes with the snapshot's transaction.
fn bound_setting(i: usize) -> String {
    format!("flashsync.chunk_after_{i}")
}

/// The statement binding the key to resume after, one parameter per key
/// value, to the settings [`KeyColumn::bound`] reads.
///
/// `COPY (query)` takes no parameters, so the values reach the query this
/// way: as bind parameters of a statement of their own, never as SQL text.
/// Rendering them as literals would rest on `quote_literal`, whose doubling
/// of quotes is safe only while `standard_conforming_strings` is on (a
/// server, database or role may turn it off, and a backslash then escapes
/// the closing quote); a cursor (`DECLARE ... $1` and `FETCH`) would take
/// parameters, but its rows arrive outside `COPY`'s text path (bound
/// statements return binary values here), so they would need a second
/// mapping to values, not the one the feed shares ([`crate::values`]).
fn bind_statement(n: usize) -> String {
    let sets: Vec<String> =
        (0..n).map(|i| format!("pg_catalog.set_config('{}', ${}, true)", bound_setting(i), i + 1)).collect();
    format!("SELECT {}", sets.join(", "))
}

/// The values of `after` as text for [`bind_statement`], checked against the
/// key they claim to be of. Values are never put in messages (they may be
/// sensitive); their position and kind are.
fn bound_values(key: &[KeyColumn], after: &Key) -> Result<Vec<String>, String> {
    if after.0.len() != key.len() {
        return Err(format!("it has {} values, and the key {} columns", after.0.len(), key.len()));
    }
    key.iter()
        .zip(&after.0)
        .map(|(column, value)| match (column.kind, value) {
            (KeyKind::Int, Value::Int(i)) => Ok(i.to_string()),
            // Postgres text cannot hold NUL (and a setting is a C string).
            (KeyKind::Text, Value::Text(s)) if s.contains('\0') => {
                Err(format!("its value for {:?} holds a NUL character, which no Postgres text can", column.name))
            }
            (KeyKind::Text, Value::Text(s)) => Ok(s.clone()),
            (KeyKind::Bytes, Value::Bytes(b)) => Ok(b.iter().map(|byte| format!("{byte:02x}")).collect()),
            // Only the output form orders as the key does (see `KeyKind`).
            (KeyKind::Uuid, Value::Text(s)) if !is_uuid_output(s) => {
                Err(format!("its value for {:?} is not a uuid as Postgres prints one", column.name))
            }
            (KeyKind::Uuid, Value::Text(s)) => Ok(s.clone()),
            (kind, other) => Err(format!(
                "its value for {:?} is {}, but the column is {}",
                column.name,
                match other {
                    Value::Null => "NULL",
                    Value::Bool(_) => "a boolean",
                    Value::Int(_) => "an integer",
                    Value::Float(_) => "a float",
                    Value::Text(_) => "text",
                    Value::Bytes(_) => "bytes",
                },
                match kind {
                    KeyKind::Int => "an integer",
                    KeyKind::Text => "text",
                    KeyKind::Bytes => "bytes",
                    KeyKind::Uuid => "a uuid",
                }
            )),
        })
        .collect()
}

/// Whether `s` is a `uuid` as Postgres prints one (`uuid_out`): lowercase
/// hex digits in groups of 8, 4, 4, 4 and 12, joined by dashes.
fn is_uuid_output(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// How one chunk is cut.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Split {
    /// The key, in key order.
    key: Vec<KeyColumn>,
    /// Whether rows start above a key (bound with [`bind_statement`]).
    after: bool,
    /// Rows to copy (at least 1).
    rows: u64,
}

/// The `COPY` of the view's columns and rows; with `split`, of one chunk.
///
/// The chunk's form, `WHERE (filter) AND (k1, k2) > (after) ORDER BY k1, k2
/// LIMIT rows + 1`: with `ORDER BY` the key, Postgres reads the key's own
/// btree index in order (the row comparison is its start condition) and
/// `LIMIT` stops the scan, so a chunk reads about as many index entries as
/// it copies rows instead of sorting the rest of the table each time. The
/// key is unique (a primary key or replica identity index, both `NOT
/// NULL`), so every row is a key of its own and a limit always ends at a
/// key boundary (`copy` checks this row by row). The one row past `rows`
/// is not copied: it only says that rows remain ([`ChunkEnd::After`])
/// without a further, empty chunk to find out. A row comparison is
/// lexicographic, like encoded keys. A text key column with a collation
/// other than `C` cannot use its index for `C` order: Postgres sorts the
/// rows above the bound instead (a top-N sort, bounded by the limit, or an
/// incremental sort after leading integer columns), slower but the same
/// rows.
fn copy_statement(table: &str, columns: &str, filter: Option<String>, split: Option<&Split>) -> String {
    let mut conditions = Vec::new();
    if let Some(filter) = filter {
        // Parenthesised: the filter may be an `OR`.
        conditions.push(format!("({filter})"));
    }
    let mut tail = String::new();
    if let Some(split) = split {
        if split.after {
            let columns: Vec<String> = split.key.iter().map(KeyColumn::ordered).collect();
            let bounds: Vec<String> = split.key.iter().enumerate().map(|(i, c)| c.bound(i)).collect();
            conditions.push(format!("({}) > ({})", columns.join(", "), bounds.join(", ")));
        }
        let order: Vec<String> = split.key.iter().map(KeyColumn::ordered).collect();
        // LIMIT is a bigint.
        let limit = split.rows.saturating_add(1).min(i64::MAX as u64);
        tail = format!(" ORDER BY {} LIMIT {limit}", order.join(", "));
    }
    let filter = if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
    format!("COPY (SELECT {columns} FROM {table}{filter}{tail}) TO STDOUT")
}

/// The keys of a split copy's rows as they stream by: each must be above
/// the one before in encoded order — the check that Postgres' order is the
/// machine's, and that no two rows share a key, so the chunk ends at a key
/// boundary — and the last copied is where the chunk ends.
struct KeyOrder {
    /// For each local column, its position in the key.
    position_of_column: Vec<Option<usize>>,
    /// The current row's key values, encoded, by key position.
    parts: Vec<Vec<u8>>,
    /// The current row's encoded key.
    current: Vec<u8>,
    /// The last copied row's encoded key, once a row was copied.
    last: Option<Vec<u8>>,
}

impl KeyOrder {
    fn new(local: &RelationSchema) -> Self {
        let mut position_of_column = vec![None; local.columns.len()];
        for (position, &column) in local.key.iter().enumerate() {
            if let Some(slot) = position_of_column.get_mut(column) {
                *slot = Some(position);
            }
        }
        KeyOrder { position_of_column, parts: vec![Vec::new(); local.key.len()], current: Vec::new(), last: None }
    }

    /// The current row's value of local column `column`.
    fn value(&mut self, column: usize, value: ValueRef<'_>) {
        if let Some(part) = self.position_of_column.get(column).copied().flatten().and_then(|p| self.parts.get_mut(p)) {
            encode_key_value_into(value, part);
        }
    }

    /// Ends the current row: how its key compares with the last copied.
    fn end_row(&mut self) -> Ordering {
        self.current.clear();
        for part in &mut self.parts {
            self.current.extend_from_slice(part);
            part.clear();
        }
        match &self.last {
            None => Ordering::Greater,
            Some(last) => self.current.as_slice().cmp(last),
        }
    }

    /// The row just ended was copied.
    fn copied(&mut self) {
        let last = self.last.get_or_insert_with(Vec::new);
        std::mem::swap(last, &mut self.current);
    }

    /// The last copied row's key.
    fn last_key(&self) -> Result<Option<Key>, SourceError> {
        self.last
            .as_deref()
            .map(decode_key)
            .transpose()
            .map_err(|e| error::protocol("reading the last key of a chunk", e))
    }
}

/// A chunk asked for: the rows whose key is above `after` (all when
/// `None`), stopping after `rows`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChunkRequest<'a> {
    /// The key the previous chunk ended after.
    pub(crate) after: Option<&'a Key>,
    /// Rows to copy at least, where the key allows a split (0 counts as 1,
    /// so every chunk makes progress).
    pub(crate) rows: u64,
}

/// Copies `rel` into `sink` from one consistent snapshot.
pub(crate) async fn take(
    client: &mut Client,
    rel: &UpstreamRelation,
    shape: &ViewShape,
    sink: &mut dyn RowSink,
    limits: &SnapshotLimits,
) -> Result<SnapshotPoint, SourceError> {
    Ok(copy(client, rel, shape, None, sink, limits).await?.point)
}

/// Copies one chunk of `rel` into `sink` from a snapshot of its own: the
/// rows above `chunk.after` in the order of their encoded keys, up to
/// `chunk.rows` of them. A relation whose key cannot be split in that order
/// ([`split_key`]) is copied whole, as one chunk, when `after` is `None`,
/// and refused (`Unsupported`) otherwise.
pub(crate) async fn take_chunk(
    client: &mut Client,
    rel: &UpstreamRelation,
    shape: &ViewShape,
    chunk: ChunkRequest<'_>,
    sink: &mut dyn RowSink,
    limits: &SnapshotLimits,
) -> Result<CopiedChunk, SourceError> {
    copy(client, rel, shape, Some(chunk), sink, limits).await
}

/// [`take`] or [`take_chunk`].
async fn copy(
    client: &mut Client,
    rel: &UpstreamRelation,
    shape: &ViewShape,
    chunk: Option<ChunkRequest<'_>>,
    sink: &mut dyn RowSink,
    limits: &SnapshotLimits,
) -> Result<CopiedChunk, SourceError> {
    let schema = shape.upstream();
    let local = shape.local();
    // Foreign tables cannot be locked; everything else is locked before the
    // snapshot is taken.
    let lockable = match catalog::lookup(&*client, rel).await? {
        None => return Err(SourceError::relation_missing(rel)),
        Some((_, kind, _)) => kind != b'f',
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| error::pg(format!("starting snapshot of {rel}"), &e))?;
        // Lock first, before the snapshot exists: DDL or TRUNCATE committed
        // between taking the snapshot and reading the table would otherwise
        // show through (they are not MVCC-safe).
        let lock = format!("LOCK TABLE {} IN ACCESS SHARE MODE", qualified(&rel.schema, &rel.table));
        if let Err(e) = async {
            if lockable {
                tx.batch_execute(&lock).await
            } else {
                Ok(())
            }
        }
        .await
        {
            return Err(match error::sqlstate(&e) {
                Some("42P01") | Some("3F000") => SourceError::relation_missing(rel),
                _ => error::pg(format!("locking {rel} for its snapshot"), &e),
            });
        }
        // One statement: the transaction snapshot is taken as it starts, and
        // the insert LSN is read after, so every commit the snapshot sees
        // lies before `lsn`.
        let row = tx
            .query_one(
                "SELECT pg_catalog.pg_current_snapshot()::text, pg_catalog.pg_current_wal_insert_lsn()::text",
                &[],
            )
            .await
            .map_err(|e| error::pg(format!("reading the snapshot point for {rel}"), &e))?;
        let snap: String = row.get(0);
        let lsn: String = row.get(1);
        let (xmin, xmax, xip) = parse_pg_snapshot(&snap)
            .ok_or_else(|| error::protocol("reading the snapshot point", "unparsable pg_current_snapshot()"))?;
        let lsn: Lsn = lsn.parse().map_err(|e| error::protocol("reading the snapshot point", e))?;
        // The xip race: a transaction still in the proc array when the
        // snapshot was taken, but committed now, may already have been
        // decoded and delivered by the feed — yet the snapshot does not see
        // it. Retake the snapshot rather than report it as in progress.
        if !xip.is_empty() {
            let xids: Vec<String> = xip.iter().map(u64::to_string).collect();
            let committed = tx
                .query(
                    "SELECT x::text FROM unnest($1::text[]) AS x \
                     WHERE pg_catalog.pg_xact_status(x::xid8) = 'committed'",
                    &[&xids],
                )
                .await
                .map_err(|e| error::pg(format!("checking in-progress transactions for {rel}"), &e))?;
            if !committed.is_empty() {
                drop(tx);
                if attempt > limits.retries {
                    return Err(SourceError::new(
                        SourceErrorKind::Other,
                        format!(
                            "could not take a consistent snapshot of {rel} after {attempt} attempts: \
                             each time, transactions listed as in progress had already committed"
                        ),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(20)) * 5)).await;
                continue;
            }
        }
        // The shape must still be the one described (read under the same
        // snapshot and lock).
        let attrs = catalog::attributes(&tx, u32::try_from(schema.source_id.0).unwrap_or(0)).await?;
        // Schemas leave generated columns out (pgoutput does not send them;
        // see `catalog::describe`); a schema stored by an earlier version
        // may list them for a materialized view. Anything else means the
        // relation changed since it was described — a column dropped and
        // added again under its name too (another attribute number): the
        // copy would hold its new values under the old column's number.
        let matches = |list: &[&catalog::AttrInfo]| {
            let numbered = |ids: &[u32]| {
                ids.is_empty() || list.iter().zip(ids).all(|(a, id)| u32::from(a.attnum.unsigned_abs()) == *id)
            };
            list.len() == schema.columns.len()
                && list.iter().zip(&schema.columns).all(|(a, c)| a.name == c.name && a.type_name == c.type_name)
                && numbered(&schema.column_ids)
        };
        let all: Vec<&catalog::AttrInfo> = attrs.iter().collect();
        let stored: Vec<&catalog::AttrInfo> = attrs.iter().filter(|a| !a.generated).collect();
        let current = catalog::lookup(&tx, rel).await?;
        let same_relation = current.map(|c| u64::from(c.0)) == Some(schema.source_id.0);
        let type_oids: Vec<u32> = if !same_relation {
            return Err(SourceError::new(
                // Describing it again fixes this: retried soon.
                SourceErrorKind::Other,
                format!("{rel} was dropped and re-created since it was described; describe it again"),
            ));
        } else if matches(&all) {
            all.iter().map(|a| a.type_oid).collect()
        } else if matches(&stored) {
            stored.iter().map(|a| a.type_oid).collect()
        } else {
            return Err(SourceError::new(
                SourceErrorKind::Other,
                format!("{rel} changed shape since it was described; describe it again"),
            ));
        };
        // The view's columns, in its order, and the type of each.
        let type_oids: Vec<u32> = match shape.projection() {
            None => type_oids,
            Some(p) => p.iter().map(|&i| type_oids.get(i).copied().unwrap_or(0)).collect(),
        };
        // A chunk is cut by key only when the key's Postgres order is the
        // order of encoded keys; otherwise the relation is one chunk.
        let split = match chunk {
            None => None,
            Some(chunk) => {
                let mut key = split_key(local, &type_oids);
                if key.as_ref().is_some_and(|k| k.iter().any(|c| c.kind == KeyKind::Text)) {
                    // `COLLATE "C"` compares the server's bytes: UTF-8 byte
                    // order (the encoded keys') only in a UTF-8 database.
                    let row = tx
                        .query_one("SELECT pg_catalog.current_setting('server_encoding')", &[])
                        .await
                        .map_err(|e| error::pg(format!("reading the encoding of {rel}'s database"), &e))?;
                    let encoding: String =
                        row.try_get(0).map_err(|e| error::protocol("reading the server encoding", e))?;
                    if encoding != "UTF8" {
                        key = None;
                    }
                }
                match (key, chunk.after) {
                    (Some(key), after) => {
                        if let Some(after) = after {
                            let values = bound_values(&key, after).map_err(|why| {
                                SourceError::new(
                                    SourceErrorKind::Other,
                                    format!("cannot resume the copy of {rel} after the given key: {why}"),
                                )
                            })?;
                            let params: Vec<&(dyn ToSql + Sync)> =
                                values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                            tx.execute(bind_statement(values.len()).as_str(), &params)
                                .await
                                .map_err(|e| error::pg(format!("binding where the copy of {rel} resumes"), &e))?;
                        }
                        Some(Split { key, after: after.is_some(), rows: chunk.rows.max(1) })
                    }
                    (None, None) => None,
                    (None, Some(_)) => {
                        return Err(SourceError::new(
                            SourceErrorKind::Unsupported,
                            format!(
                                "{rel} is copied whole: its key cannot be split in the order of encoded keys \
                                 (only int2, int4, int8, bytea, uuid, and text or varchar in a UTF-8 database, \
                                 can), \
                                 so a copy cannot resume after a key"
                            ),
                        ))
                    }
                }
            }
        };
        let cols = local.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
        // The filter is rendered from its parsed form (identifiers quoted,
        // literals escaped), never spliced from the user's text: it cannot
        // inject SQL, and the stream evaluates the very same expression.
        let filter = shape.filter().map(|f| f.to_sql());
        let copy = copy_statement(&qualified(&rel.schema, &rel.table), &cols, filter, split.as_ref());
        let stream = tx.copy_out(copy.as_str()).await.map_err(|e| error::pg(format!("starting COPY of {rel}"), &e))?;
        pin_mut!(stream);
        let mut parser = CopyTextParser::new();
        let mut scratch = Vec::new();
        // Rows are parsed straight from the COPY text into their stored
        // encoding: no `Row` is built, so a row costs no allocation of its own.
        let mut batch = EncodedRowsBuilder::new(local);
        let mut rows: u64 = 0;
        let width = local.columns.len();
        let mut keys = split.as_ref().map(|_| KeyOrder::new(local));
        // Rows a chunk copies; the one after, if any, only says more remain.
        let limit = split.as_ref().map_or(u64::MAX, |s| s.rows);
        let mut more = false;
        // Postgres sends about one row per chunk; batches go to the sink when
        // full.
        while let Some(chunk) = stream.try_next().await.map_err(|e| error::pg(format!("reading COPY of {rel}"), &e))? {
            parser
                .push_lines::<RowError>(&chunk, |line| {
                    let bad_row =
                        |what: String| RowError::Source(error::protocol(format!("reading COPY of {rel}"), what));
                    if more {
                        return Err(bad_row(format!("more rows than the limit of {}", limit.saturating_add(1))));
                    }
                    let peek = rows >= limit;
                    let mut fields = 0;
                    // A zero-column row is an empty line, not one empty field.
                    if width > 0 {
                        let mut oids = type_oids.iter();
                        let parsed = for_each_field::<RowError>(line, &mut scratch, |f| {
                            // Extra fields are counted (by the builder, or
                            // below for the row past a chunk's limit), and
                            // the row refused.
                            let oid = oids.next().copied().unwrap_or(0);
                            let value = f.map(|text| parse_text(oid, text)).transpose().map_err(|e| {
                                RowError::Source(SourceError::new(
                                    SourceErrorKind::Protocol,
                                    format!("snapshot of {rel}: {e}"),
                                ))
                            })?;
                            let value = value.as_ref().map_or(ValueRef::Null, Parsed::as_value_ref);
                            if !peek {
                                batch.push(value);
                            }
                            if let Some(keys) = keys.as_mut() {
                                keys.value(fields, value);
                            }
                            fields += 1;
                            Ok(())
                        });
                        if let Err(e) = parsed {
                            batch.discard_row();
                            return Err(e);
                        }
                    }
                    if peek {
                        if fields != width {
                            return Err(bad_row(format!("row has {fields} fields, expected {width}")));
                        }
                    } else {
                        batch
                            .finish_row()
                            .map_err(|e| bad_row(format!("row has {} fields, expected {width}", e.got)))?;
                    }
                    if let Some(keys) = keys.as_mut() {
                        match keys.end_row() {
                            Ordering::Greater => {}
                            // Not a key boundary: the chunk could end
                            // between rows the next one would skip.
                            Ordering::Equal => {
                                return Err(RowError::Source(SourceError::new(
                                    SourceErrorKind::Other,
                                    format!(
                                        "two rows of {rel} have the same key: it is no longer unique \
                                         (changed since it was described?); describe it again"
                                    ),
                                )))
                            }
                            Ordering::Less => {
                                return Err(RowError::Source(SourceError::new(
                                    SourceErrorKind::Other,
                                    format!(
                                        "rows of {rel} came out of the order of their encoded keys, \
                                         which a chunk must follow"
                                    ),
                                )))
                            }
                        }
                        if peek {
                            more = true;
                            return Ok(());
                        }
                        keys.copied();
                    }
                    rows += 1;
                    Ok(())
                })
                .map_err(|RowError::Source(e)| e)?;
            if batch.len() >= limits.batch_rows || batch.byte_len() >= limits.batch_bytes {
                sink.write_encoded(batch.take()).await?;
            }
        }
        parser.finish().map_err(|e| error::protocol(format!("reading COPY of {rel}"), e))?;
        if !batch.is_empty() {
            sink.write_encoded(batch.take()).await?;
        }
        tx.commit().await.map_err(|e| error::pg(format!("ending snapshot of {rel}"), &e))?;
        let end = match keys {
            Some(keys) if more => match keys.last_key()? {
                Some(last) => ChunkEnd::After(last),
                // A row past the limit with none before it: the limit is
                // at least 1, so this cannot be.
                None => {
                    return Err(error::protocol(format!("reading COPY of {rel}"), "a chunk ended before its first row"))
                }
            },
            _ => ChunkEnd::Done,
        };
        return Ok(CopiedChunk { point: SnapshotPoint { xmin, xmax, xip, lsn, rows }, end });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_snapshots() {
        assert_eq!(parse_pg_snapshot("10:20:"), Some((10, 20, vec![])));
        assert_eq!(parse_pg_snapshot("10:20:12,15"), Some((10, 20, vec![12, 15])));
        assert_eq!(parse_pg_snapshot("10:20"), None);
        assert_eq!(parse_pg_snapshot("a:20:"), None);
    }

    fn column(name: &str, kind: KeyKind) -> KeyColumn {
        KeyColumn { name: name.into(), kind }
    }

    #[test]
    fn a_whole_copy_is_the_plain_statement() {
        assert_eq!(
            copy_statement("\"s\".\"t\"", "\"a\", \"b\"", None, None),
            "COPY (SELECT \"a\", \"b\" FROM \"s\".\"t\") TO STDOUT"
        );
        assert_eq!(
            copy_statement("\"t\"", "\"a\"", Some("(\"a\" > 1)".into()), None),
            "COPY (SELECT \"a\" FROM \"t\" WHERE ((\"a\" > 1))) TO STDOUT"
        );
    }

    #[test]
    fn a_chunk_is_ordered_limited_and_reads_its_bound_from_settings() {
        let key = vec![column("g", KeyKind::Int), column("n\"x", KeyKind::Text)];
        let first = Split { key: key.clone(), after: false, rows: 700 };
        assert_eq!(
            copy_statement("\"t\"", "\"g\", \"n\"\"x\"", None, Some(&first)),
            "COPY (SELECT \"g\", \"n\"\"x\" FROM \"t\" \
             ORDER BY \"g\", \"n\"\"x\" COLLATE pg_catalog.\"C\" LIMIT 701) TO STDOUT"
        );
        let next = Split { key, after: true, rows: u64::MAX };
        assert_eq!(
            copy_statement("\"t\"", "\"g\"", Some("(\"v\" = 1) OR (\"v\" = 2)".into()), Some(&next)),
            "COPY (SELECT \"g\" FROM \"t\" WHERE ((\"v\" = 1) OR (\"v\" = 2)) \
             AND (\"g\", \"n\"\"x\" COLLATE pg_catalog.\"C\") > \
             (pg_catalog.current_setting('flashsync.chunk_after_0')::pg_catalog.int8, \
             pg_catalog.current_setting('flashsync.chunk_after_1') COLLATE pg_catalog.\"C\") \
             ORDER BY \"g\", \"n\"\"x\" COLLATE pg_catalog.\"C\" LIMIT 9223372036854775807) TO STDOUT"
        );
        assert_eq!(
            bind_statement(2),
            "SELECT pg_catalog.set_config('flashsync.chunk_after_0', $1, true), \
             pg_catalog.set_config('flashsync.chunk_after_1', $2, true)"
        );
    }

    #[test]
    fn only_integer_text_bytea_and_uuid_keys_split() {
        use flashsync_core::{Column, SourceRelId};
        let cols = |types: &[&str]| -> Vec<Column> {
            types.iter().enumerate().map(|(i, t)| Column { name: format!("c{i}"), type_name: (*t).into() }).collect()
        };
        let keyed = RelationSchema::keyed(SourceRelId(1), cols(&["text", "int4", "numeric"]), vec![1, 0]);
        assert_eq!(
            split_key(&keyed, &[TEXT_OID, oid::INT4, 1700]),
            Some(vec![column("c1", KeyKind::Int), column("c0", KeyKind::Text)])
        );
        let bytes = RelationSchema::keyed(SourceRelId(1), cols(&["bytea"]), vec![0]);
        assert_eq!(split_key(&bytes, &[oid::BYTEA]), Some(vec![column("c0", KeyKind::Bytes)]));
        let uuid = RelationSchema::keyed(SourceRelId(1), cols(&["int4", "uuid"]), vec![0, 1]);
        assert_eq!(
            split_key(&uuid, &[oid::INT4, UUID_OID]),
            Some(vec![column("c0", KeyKind::Int), column("c1", KeyKind::Uuid)])
        );
        // numeric, bpchar, float8, oid, timestamptz, a domain (its own OID).
        for other in [1700, 1042, oid::FLOAT8, oid::OID, 1184, 16_384] {
            let schema = RelationSchema::keyed(SourceRelId(1), cols(&["x"]), vec![0]);
            assert_eq!(split_key(&schema, &[other]), None, "type {other}");
        }
        let full = RelationSchema::full_row(SourceRelId(1), cols(&["int8"]));
        assert_eq!(split_key(&full, &[oid::INT8]), None);
    }

    #[test]
    fn the_key_to_resume_after_must_fit_the_key() {
        let key = vec![column("g", KeyKind::Int), column("n", KeyKind::Text)];
        let after = |values: Vec<Value>| bound_values(&key, &Key(values));
        assert_eq!(
            after(vec![Value::Int(-7), Value::Text("it's".into())]),
            Ok(vec!["-7".to_owned(), "it's".to_owned()])
        );
        assert!(after(vec![Value::Int(1)]).is_err());
        assert!(after(vec![Value::Text("1".into()), Value::Text("a".into())]).is_err());
        assert!(after(vec![Value::Int(1), Value::Null]).is_err());
        assert!(after(vec![Value::Int(1), Value::Bytes(vec![1])]).is_err());
        assert_eq!(
            bound_values(&[column("b", KeyKind::Bytes)], &Key(vec![Value::Bytes(vec![0, 0xab, 7])])),
            Ok(vec!["00ab07".to_owned()])
        );
        let nul = after(vec![Value::Int(1), Value::Text("a\0b".into())]).unwrap_err();
        assert!(nul.contains("NUL") && !nul.contains("a\0b"), "{nul}");
        let uuid = [column("u", KeyKind::Uuid)];
        let canonical = "0123abcd-ef01-2345-6789-abcdef012345";
        assert_eq!(bound_values(&uuid, &Key(vec![Value::Text(canonical.into())])), Ok(vec![canonical.to_owned()]));
        // Forms the cast would take but that do not order as the key does.
        for other in [
            "0123ABCD-EF01-2345-6789-ABCDEF012345",
            "0123abcdef0123456789abcdef012345",
            "{0123abcd-ef01-2345-6789-abcdef012345}",
            "0123abcd-ef01-2345-6789-abcdef01234",
        ] {
            let e = bound_values(&uuid, &Key(vec![Value::Text(other.into())])).unwrap_err();
            assert!(e.contains("not a uuid") && !e.contains(other), "{e}");
        }
        assert!(bound_values(&uuid, &Key(vec![Value::Bytes(vec![1; 16])])).is_err());
    }

    #[test]
    fn key_order_catches_duplicates_and_disorder() {
        use flashsync_core::{Column, SourceRelId};
        let cols = vec![
            Column { name: "v".into(), type_name: "text".into() },
            Column { name: "k".into(), type_name: "int8".into() },
        ];
        let local = RelationSchema::keyed(SourceRelId(1), cols, vec![1]);
        let mut order = KeyOrder::new(&local);
        let row = |order: &mut KeyOrder, k: i64| {
            order.value(0, ValueRef::Text("ignored"));
            order.value(1, ValueRef::Int(k));
            order.end_row()
        };
        assert_eq!(row(&mut order, 5), Ordering::Greater);
        order.copied();
        assert_eq!(row(&mut order, 5), Ordering::Equal);
        assert_eq!(row(&mut order, -1), Ordering::Less);
        assert_eq!(row(&mut order, 6), Ordering::Greater);
        order.copied();
        assert_eq!(order.last_key().expect("decodes"), Some(Key(vec![Value::Int(6)])));
    }

    /// Short byte strings, heavy in the bytes the key encoding treats
    /// specially (`00`, `01`, `FF`).
    fn some_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(0xffu8), any::<u8>()], 0..6)
    }

    proptest::proptest! {
        /// What splitting rests on: `int8` order, `COLLATE "C"` order
        /// (UTF-8 bytes, a prefix first) and row comparison (lexicographic)
        /// are the order of encoded keys.
        #[test]
        fn postgres_orders_split_keys_like_encoded_keys(
            a in proptest::prelude::any::<(i64, String)>(),
            b in proptest::prelude::any::<(i64, String)>(),
        ) {
            // Postgres text holds no NUL.
            let (a, b) = ((a.0, a.1.replace('\0', "")), (b.0, b.1.replace('\0', "")));
            let encoded = |(i, s): &(i64, String)| {
                flashsync_core::codec::encode_key(&Key(vec![Value::Int(*i), Value::Text(s.clone())]))
            };
            let postgres = a.0.cmp(&b.0).then_with(|| a.1.as_bytes().cmp(b.1.as_bytes()));
            proptest::prop_assert_eq!(postgres, encoded(&a).cmp(&encoded(&b)));
        }

        /// `uuid` order (`memcmp` of the 16 bytes) is the order of their
        /// output forms as encoded keys; `b` is `a` with one byte changed,
        /// so they share a prefix of any length.
        #[test]
        fn postgres_orders_uuids_like_encoded_keys(
            a in proptest::prelude::any::<[u8; 16]>(),
            at in 0usize..16,
            byte in proptest::prelude::any::<u8>(),
        ) {
            let mut b = a;
            b[at] = byte;
            let output = |u: &[u8; 16]| {
                let hex: String = u.iter().map(|byte| format!("{byte:02x}")).collect();
                format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
            };
            proptest::prop_assert!(is_uuid_output(&output(&a)));
            let encoded = |u: &[u8; 16]| flashsync_core::codec::encode_key(&Key(vec![Value::Text(output(u))]));
            proptest::prop_assert_eq!(a.cmp(&b), encoded(&a).cmp(&encoded(&b)));
        }

        /// `bytea` order (`memcmp`, a prefix first), NULs included, and
        /// another column after it, is the order of encoded keys.
        #[test]
        fn postgres_orders_bytea_like_encoded_keys(
            a in some_bytes(),
            b in some_bytes(),
            x in -2i64..2,
            y in -2i64..2,
        ) {
            let encoded = |bytes: &[u8], i: i64| {
                flashsync_core::codec::encode_key(&Key(vec![Value::Bytes(bytes.to_vec()), Value::Int(i)]))
            };
            let postgres = a.cmp(&b).then(x.cmp(&y));
            proptest::prop_assert_eq!(postgres, encoded(&a, x).cmp(&encoded(&b, y)));
        }
    }
}
