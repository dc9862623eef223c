//! `pgoutput` messages → [`StreamEvent`]s: relation cache, row decoding
//! through the shared value mapping, transaction framing checks.

use std::collections::HashMap;

use flashsync_core::{
    Cell, Change, OldRow, Row, SourceError, SourceErrorKind, SourceRelId, StreamEvent, Timestamp, Value,
};

use crate::error::protocol;
use crate::pgoutput::{Message, OldTuple, Relation, TupleData, TupleValue};
use crate::replication::frame::pg_micros_to_unix_millis;
use crate::shape::{CatalogColumns, Shape, Shapes};
use crate::values::text_to_value;

/// Turns one session's `pgoutput` messages into feed events.
pub(crate) struct FeedDecoder {
    relations: HashMap<u32, Relation>,
    shapes: Shapes,
    /// The open transaction's xid, between `Begin` and `Commit`.
    txn: Option<u32>,
}

fn proto(what: impl std::fmt::Display) -> SourceError {
    protocol("decoding the replication stream", what)
}

impl FeedDecoder {
    pub(crate) fn new(shapes: Shapes) -> Self {
        FeedDecoder { relations: HashMap::new(), shapes, txn: None }
    }

    /// Inside a transaction (between `Begin` and `Commit`).
    pub(crate) fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// The xid of the open transaction, if any.
    pub(crate) fn xid(&self) -> Option<u32> {
        self.txn
    }

    /// A `Relation` message, with the relation's columns as the catalog
    /// lists them now (`None`: the catalog does not show the transaction
    /// yet; see [`crate::shape`] for why): the `SchemaChanged`
    /// event it makes, if it changes the expected shape.
    pub(crate) fn on_relation(&mut self, r: Relation, now: Option<&CatalogColumns>) -> Option<StreamEvent> {
        let shape = Shape::from_relation(&r);
        let event = self.shapes.announced(r.oid, &shape, now).map(|(detail, columns)| StreamEvent::SchemaChanged {
            rel: SourceRelId(u64::from(r.oid)),
            detail,
            columns,
        });
        self.relations.insert(r.oid, r);
        event
    }

    /// The event for one message, if it makes one; `Relation` messages go
    /// to [`on_relation`](Self::on_relation).
    pub(crate) fn on_message(&mut self, msg: Message) -> Result<Option<StreamEvent>, SourceError> {
        match msg {
            Message::Begin(b) => {
                if self.txn.is_some() {
                    return Err(proto("Begin inside an open transaction"));
                }
                self.txn = Some(b.xid);
                Ok(Some(StreamEvent::Begin {
                    xid: b.xid,
                    final_lsn: b.final_lsn,
                    commit_time: Timestamp(pg_micros_to_unix_millis(b.commit_time)),
                }))
            }
            Message::Commit(c) => {
                if self.txn.take().is_none() {
                    return Err(proto("Commit outside a transaction"));
                }
                Ok(Some(StreamEvent::Commit { end_lsn: c.end_lsn }))
            }
            // Announcements need the catalog (`on_relation`).
            Message::Relation(r) => Err(proto(format!("relation {} announced without its catalog lookup", r.oid))),
            // Values are mapped by type OID; names are not needed. Origins
            // and logical messages carry nothing to mirror.
            Message::Type(_) | Message::Origin(_) | Message::Message(_) => Ok(None),
            Message::Insert(i) => {
                let rel = self.relation(i.rel)?;
                let new = Row(cells(rel, &i.new, "insert")?
                    .into_iter()
                    .map(|c| match c {
                        Cell::Set(v) => Ok(v),
                        Cell::Unchanged => Err(proto("unchanged TOAST marker in an inserted row")),
                    })
                    .collect::<Result<_, _>>()?);
                self.change(Change::Insert { rel: SourceRelId(u64::from(i.rel)), new })
            }
            Message::Update(u) => {
                let rel = self.relation(u.rel)?;
                let old = u.old.as_ref().map(|o| old_row(rel, o)).transpose()?;
                let new = cells(rel, &u.new, "update")?;
                self.change(Change::Update { rel: SourceRelId(u64::from(u.rel)), old, new })
            }
            Message::Delete(d) => {
                let rel = self.relation(d.rel)?;
                let old = old_row(rel, &d.old)?;
                self.change(Change::Delete { rel: SourceRelId(u64::from(d.rel)), old })
            }
            Message::Truncate(t) => {
                self.change(Change::Truncate { rels: t.rels.iter().map(|&r| SourceRelId(u64::from(r))).collect() })
            }
        }
    }

    fn relation(&self, oid: u32) -> Result<&Relation, SourceError> {
        self.relations
            .get(&oid)
            .ok_or_else(|| proto(format!("change for relation OID {oid} before its Relation message")))
    }

    fn change(&self, change: Change) -> Result<Option<StreamEvent>, SourceError> {
        if self.txn.is_none() {
            return Err(proto("row change outside a transaction"));
        }
        Ok(Some(StreamEvent::Change(change)))
    }
}

fn cells(rel: &Relation, tuple: &TupleData, what: &str) -> Result<Vec<Cell>, SourceError> {
    if tuple.0.len() != rel.columns.len() {
        return Err(proto(format!(
            "{what} on {}.{} has {} values but the relation has {} columns",
            rel.namespace,
            rel.name,
            tuple.0.len(),
            rel.columns.len()
        )));
    }
    tuple
        .0
        .iter()
        .zip(&rel.columns)
        .map(|(v, col)| {
            Ok(match v {
                TupleValue::Null => Cell::Set(Value::Null),
                TupleValue::UnchangedToast => Cell::Unchanged,
                TupleValue::Text(t) => Cell::Set(text_to_value(col.type_oid, t).map_err(|e| {
                    SourceError::new(
                        SourceErrorKind::Protocol,
                        format!("column {} of {}.{}: {e}", col.name, rel.namespace, rel.name),
                    )
                })?),
                TupleValue::Binary(_) => return Err(proto("binary tuple value, which was not requested")),
            })
        })
        .collect()
}

/// Old images: key columns (others NULL) for `K`, the whole row for `O`.
/// Old images are sent de-TOASTed (Postgres flattens the old tuple it logs
/// under `REPLICA IDENTITY FULL`), so an unchanged marker is a protocol
/// error.
fn old_row(rel: &Relation, old: &OldTuple) -> Result<OldRow, SourceError> {
    let row = cells(rel, old.tuple(), "old row image")?
        .into_iter()
        .map(|c| match c {
            Cell::Set(v) => Ok(v),
            Cell::Unchanged => Err(proto("unchanged TOAST marker in an old row image")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Row)?;
    Ok(match old {
        OldTuple::Key(_) => OldRow::Key(row),
        OldTuple::Full(_) => OldRow::Full(row),
    })
}
