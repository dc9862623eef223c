//! Consistent snapshots: `COPY` of a relation inside a `REPEATABLE READ`
//! transaction whose visibility point is reported to the machine (DESIGN
//! §4.4).

use std::time::Duration;

use flashsync_core::{
    EncodedRowsBuilder, Lsn, RowSink, SnapshotPoint, SourceError, SourceErrorKind, UpstreamRelation, ValueRef,
    ViewShape,
};
use futures::{pin_mut, TryStreamExt};
use tokio_postgres::Client;

use crate::catalog;
use crate::copy_text::{for_each_field, CopyTextParser};
use crate::error;
use crate::ident::{qualified, quote_ident};
use crate::values::parse_text;

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

/// Copies `rel` into `sink` from one consistent snapshot.
pub(crate) async fn take(
    client: &mut Client,
    rel: &UpstreamRelation,
    shape: &ViewShape,
    sink: &mut dyn RowSink,
    limits: &SnapshotLimits,
) -> Result<SnapshotPoint, SourceError> {
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
        // relation changed since it was described.
        let matches = |list: &[&catalog::AttrInfo]| {
            list.len() == schema.columns.len()
                && list.iter().zip(&schema.columns).all(|(a, c)| a.name == c.name && a.type_name == c.type_name)
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
        let cols = local.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
        // The filter is rendered from its parsed form (identifiers quoted,
        // literals escaped), never spliced from the user's text: it cannot
        // inject SQL, and the stream evaluates the very same expression.
        let filter = shape.filter().map(|f| format!(" WHERE {}", f.to_sql())).unwrap_or_default();
        let copy = format!("COPY (SELECT {cols} FROM {}{filter}) TO STDOUT", qualified(&rel.schema, &rel.table));
        let stream = tx.copy_out(copy.as_str()).await.map_err(|e| error::pg(format!("starting COPY of {rel}"), &e))?;
        pin_mut!(stream);
        let mut parser = CopyTextParser::new();
        let mut scratch = Vec::new();
        // Rows are parsed straight from the COPY text into their stored
        // encoding: no `Row` is built, so a row costs no allocation of its own.
        let mut batch = EncodedRowsBuilder::new(local);
        let mut rows: u64 = 0;
        let width = local.columns.len();
        // Postgres sends about one row per chunk; batches go to the sink when
        // full.
        while let Some(chunk) = stream.try_next().await.map_err(|e| error::pg(format!("reading COPY of {rel}"), &e))? {
            parser
                .push_lines::<RowError>(&chunk, |line| {
                    // A zero-column row is an empty line, not one empty field.
                    if width > 0 {
                        let mut oids = type_oids.iter();
                        let parsed = for_each_field::<RowError>(line, &mut scratch, |f| {
                            // Extra fields are counted by the builder, which
                            // refuses the row.
                            let oid = oids.next().copied().unwrap_or(0);
                            match f {
                                None => batch.push(ValueRef::Null),
                                Some(text) => {
                                    let value = parse_text(oid, text).map_err(|e| {
                                        RowError::Source(SourceError::new(
                                            SourceErrorKind::Protocol,
                                            format!("snapshot of {rel}: {e}"),
                                        ))
                                    })?;
                                    batch.push(value.as_value_ref());
                                }
                            }
                            Ok(())
                        });
                        if let Err(e) = parsed {
                            batch.discard_row();
                            return Err(e);
                        }
                    }
                    batch.finish_row().map_err(|e| {
                        RowError::Source(error::protocol(
                            format!("reading COPY of {rel}"),
                            format!("row has {} fields, expected {width}", e.got),
                        ))
                    })?;
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
        return Ok(SnapshotPoint { xmin, xmax, xip, lsn, rows });
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
}
