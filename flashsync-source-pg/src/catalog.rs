//! Describing upstream relations from the catalog: columns, types, key and
//! replica identity (DESIGN §4.8).

use flashsync_core::{Column, RelationSchema, SourceError, SourceErrorKind, SourceRelId, UpstreamRelation};
use tokio_postgres::GenericClient;

use crate::error;
use crate::shape::{CatalogColumns, Shape, ShapeColumn};

/// A relation as described for the source's own use.
#[derive(Clone, Debug)]
pub(crate) struct Described {
    /// What the machine gets.
    pub(crate) schema: RelationSchema,
    /// What the feed's `Relation` messages should say.
    pub(crate) shape: Shape,
    /// `pg_class.oid`.
    pub(crate) oid: u32,
}

/// Column facts read from `pg_attribute`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AttrInfo {
    pub(crate) attnum: i16,
    pub(crate) name: String,
    pub(crate) type_oid: u32,
    pub(crate) type_modifier: i32,
    pub(crate) type_name: String,
    pub(crate) generated: bool,
}

/// Looks up `rel`'s OID, kind and replica identity setting.
pub(crate) async fn lookup(
    client: &impl GenericClient,
    rel: &UpstreamRelation,
) -> Result<Option<(u32, u8, u8)>, SourceError> {
    let row = client
        .query_opt(
            "SELECT c.oid, c.relkind::text, c.relreplident::text \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&rel.schema, &rel.table],
        )
        .await
        .map_err(|e| error::pg(format!("looking up {rel}"), &e))?;
    Ok(row.map(|r| {
        let kind: String = r.get(1);
        let ident: String = r.get(2);
        (r.get::<_, u32>(0), kind.bytes().next().unwrap_or(b'?'), ident.bytes().next().unwrap_or(b'd'))
    }))
}

/// The live, non-dropped columns of relation `oid`, in order.
pub(crate) async fn attributes(client: &impl GenericClient, oid: u32) -> Result<Vec<AttrInfo>, SourceError> {
    let rows = client
        .query(
            "SELECT a.attnum, a.attname::text, a.atttypid, a.atttypmod, t.typname::text, \
                    a.attgenerated <> '' \
             FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|e| error::pg(format!("reading columns of relation {oid}"), &e))?;
    Ok(rows
        .iter()
        .map(|r| AttrInfo {
            attnum: r.get(0),
            name: r.get(1),
            type_oid: r.get(2),
            type_modifier: r.get(3),
            type_name: r.get(4),
            generated: r.get(5),
        })
        .collect())
}

/// The columns of relation `oid` a feed carries (live, not generated), by
/// name and attribute number: what a `Relation` message is checked
/// against. With `xid` (the transaction the message came in), `None` while
/// that transaction is not visible yet: logical decoding may send a
/// transaction once its commit is flushed, before other sessions see it
/// (for as long as a synchronous standby takes to confirm it), and a
/// catalog behind the stream could vouch for a column the transaction
/// dropped and added again. Read in one statement, so the check and the
/// columns share a snapshot.
pub(crate) async fn numbered_columns(
    client: &impl GenericClient,
    oid: u32,
    xid: Option<u32>,
) -> Result<Option<CatalogColumns>, SourceError> {
    // The 32-bit xid is widened with the epoch of the snapshot's xmax (the
    // one before, if that would put it past xmax: it wrapped since).
    let rows = client
        .query(
            "WITH snap AS (SELECT pg_catalog.pg_current_snapshot() AS s), \
                  bound AS (SELECT s, pg_catalog.pg_snapshot_xmax(s)::text::int8 AS xmax FROM snap), \
                  cand AS (SELECT s, xmax, ((xmax >> 32) << 32) | $2::int8 AS x FROM bound), \
                  vis AS (SELECT $2::int8 IS NULL OR pg_catalog.pg_visible_in_snapshot( \
                              (CASE WHEN x > xmax AND x >= 4294967296 THEN x - 4294967296 ELSE x END) \
                                  ::text::xid8, s) AS visible FROM cand) \
             SELECT vis.visible, a.attname::text, a.attnum \
             FROM vis LEFT JOIN pg_catalog.pg_attribute a \
               ON a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
             ORDER BY a.attnum",
            &[&oid, &xid.map(i64::from)],
        )
        .await
        .map_err(|e| error::pg(format!("reading the columns of relation {oid}"), &e))?;
    let visible = rows.first().is_some_and(|r| r.get::<_, bool>(0));
    if !visible {
        return Ok(None);
    }
    let columns =
        rows.iter().filter_map(|r| Some((r.get::<_, Option<String>>(1)?, r.get::<_, Option<i16>>(2)?))).collect();
    Ok(Some(CatalogColumns(columns)))
}

/// Attribute numbers of the primary key and of the replica identity index.
async fn keys(client: &impl GenericClient, oid: u32) -> Result<(Option<Vec<i16>>, Option<Vec<i16>>), SourceError> {
    let rows = client
        .query(
            "SELECT i.indisprimary, i.indisreplident, i.indkey::text \
             FROM pg_catalog.pg_index i \
             WHERE i.indrelid = $1 AND (i.indisprimary OR i.indisreplident)",
            &[&oid],
        )
        .await
        .map_err(|e| error::pg(format!("reading keys of relation {oid}"), &e))?;
    let mut pk = None;
    let mut ri = None;
    for r in rows {
        let text: String = r.get(2);
        let cols: Vec<i16> = text
            .split_whitespace()
            .map(|n| n.parse::<i16>())
            .collect::<Result<_, _>>()
            .map_err(|_| error::protocol("reading keys", "unparsable indkey"))?;
        // Expression index columns (attnum 0) cannot identify rows here.
        if cols.contains(&0) {
            continue;
        }
        if r.get::<_, bool>(0) {
            pk = Some(cols.clone());
        }
        if r.get::<_, bool>(1) {
            ri = Some(cols);
        }
    }
    Ok((pk, ri))
}

/// Describes `rel`. With `feed`, checks it can be mirrored in realtime: a
/// table (or partitioned table) whose changes identify rows.
pub(crate) async fn describe(
    client: &impl GenericClient,
    rel: &UpstreamRelation,
    feed: bool,
) -> Result<Described, SourceError> {
    let (oid, kind, replident) = lookup(client, rel).await?.ok_or_else(|| SourceError::relation_missing(rel))?;
    if !matches!(kind, b'r' | b'p' | b'v' | b'm' | b'f') {
        return Err(SourceError::new(
            SourceErrorKind::Unsupported,
            format!("{rel} is not a table, view or materialized view (relkind {:?})", char::from(kind)),
        ));
    }
    if feed && !matches!(kind, b'r' | b'p') {
        return Err(SourceError::new(
            SourceErrorKind::Unsupported,
            format!(
                "{rel} is a {}; only tables can be mirrored in realtime (logical replication does not publish it)",
                match kind {
                    b'v' => "view",
                    b'm' => "materialized view",
                    _ => "foreign table",
                }
            ),
        ));
    }
    // pgoutput (before Postgres 18) never sends generated columns, so a
    // realtime view could not keep them; a materialized view of the same
    // table leaves them out too, so that views of one table have the same
    // columns whatever their persistence. (Compute them locally from the
    // columns they are generated from.)
    let attrs: Vec<AttrInfo> = attributes(client, oid).await?.into_iter().filter(|a| !a.generated).collect();
    let (pk, ri) = keys(client, oid).await?;
    let position = |attnums: &[i16]| -> Option<Vec<usize>> {
        attnums.iter().map(|n| attrs.iter().position(|a| a.attnum == *n)).collect()
    };
    let pk_pos = pk.as_deref().and_then(position);
    let ri_pos = ri.as_deref().and_then(position);
    let columns: Vec<Column> =
        attrs.iter().map(|a| Column { name: a.name.clone(), type_name: a.type_name.clone() }).collect();
    let id = SourceRelId(u64::from(oid));
    let no_identity = |why: &str| {
        SourceError::new(
            SourceErrorKind::ReplicaIdentity,
            format!(
                "{rel} {why}; realtime sync needs a primary key or REPLICA IDENTITY FULL \
                 (ALTER TABLE ... REPLICA IDENTITY FULL)"
            ),
        )
    };
    let schema = if feed {
        match (replident, &pk_pos, &ri_pos) {
            (b'd', Some(k), _) => RelationSchema::keyed(id, columns, k.clone()),
            (b'd', None, _) => return Err(no_identity("has no primary key and REPLICA IDENTITY DEFAULT")),
            (b'i', _, Some(k)) => RelationSchema::keyed(id, columns, k.clone()),
            (b'i', _, None) => return Err(no_identity("has REPLICA IDENTITY USING INDEX but the index is gone")),
            (b'f', Some(k), _) => RelationSchema::keyed(id, columns, k.clone()),
            (b'f', None, _) => RelationSchema::full_row(id, columns),
            _ => return Err(no_identity("has REPLICA IDENTITY NOTHING")),
        }
    } else {
        match (&pk_pos, &ri_pos) {
            (Some(k), _) | (None, Some(k)) => RelationSchema::keyed(id, columns, k.clone()),
            _ => RelationSchema::full_row(id, columns),
        }
    };
    // Attribute numbers (all positive: the query skips system columns) tell
    // a column from another of the same name added after it was dropped.
    let schema = schema.with_column_ids(attrs.iter().map(|a| u32::from(a.attnum.unsigned_abs())).collect());
    // What pgoutput flags as identity: the key for DEFAULT/INDEX, every
    // column for FULL.
    let identity_cols: Vec<usize> = match replident {
        b'd' => pk_pos.clone().unwrap_or_default(),
        b'i' => ri_pos.clone().unwrap_or_default(),
        b'f' => (0..attrs.len()).collect(),
        _ => Vec::new(),
    };
    let shape = Shape {
        namespace: rel.schema.clone(),
        name: rel.table.clone(),
        replident,
        columns: attrs
            .iter()
            .enumerate()
            .map(|(i, a)| ShapeColumn {
                name: a.name.clone(),
                type_oid: a.type_oid,
                type_modifier: a.type_modifier,
                identity: identity_cols.contains(&i),
                attnum: Some(a.attnum),
            })
            .collect(),
    };
    Ok(Described { schema, shape, oid })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The catalog vouches for a relation's columns only once it shows the
    /// transaction that announced them: before that, a column dropped and
    /// added again inside it still reads under its old number.
    #[tokio::test]
    async fn columns_are_read_once_the_announcing_transaction_is_visible() {
        let Some(db) = crate::testkit::test_db("catalog_visible").await else { return };
        let c = db.client().await;
        c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, x int)").await.expect("create");
        let oid: u32 = c.query_one("SELECT 't'::regclass::oid", &[]).await.expect("oid").get(0);
        let ddl = db.client().await;
        ddl.batch_execute("BEGIN; ALTER TABLE t DROP COLUMN x; ALTER TABLE t ADD COLUMN x int").await.expect("ddl");
        let full: i64 = ddl.query_one("SELECT pg_current_xact_id()::text::int8", &[]).await.expect("xid").get(0);
        let xid = u32::try_from(full & 0xffff_ffff).expect("32 bits");
        let numbers = |now: Option<CatalogColumns>| now.map(|n| n.0);
        let before = numbered_columns(&c, oid, Some(xid)).await.expect("lookup");
        assert_eq!(numbers(before), None, "vouched for columns of a transaction it does not show");
        let unchecked = numbered_columns(&c, oid, None).await.expect("lookup");
        assert_eq!(numbers(unchecked), Some(vec![("id".to_owned(), 1), ("x".to_owned(), 2)]));
        ddl.batch_execute("COMMIT").await.expect("commit");
        let after = numbered_columns(&c, oid, Some(xid)).await.expect("lookup");
        assert_eq!(numbers(after), Some(vec![("id".to_owned(), 1), ("x".to_owned(), 3)]));
    }
}
