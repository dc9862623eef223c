//! What a memory feed says of its relations' shapes, and when — as the
//! Postgres source does with `pgoutput` (`flashsync-source-pg/src/shape.rs`).
//!
//! The feed keeps each relation's **expected** shape: what it last
//! announced, or what `prepare` described when it had announced nothing (a
//! description never replaces an expected shape: views live on it read the
//! feed by it, and only an announcement may tell them it changed). It
//! judges a relation's shape where `pgoutput` would send a `Relation`
//! message — before the relation's first change on a feed, and its first
//! change after a change of its shape — and announces a change
//! (`SchemaChanged`) when the rows have other columns, or when the catalog
//! no longer vouches for a column: a column matched by name and type
//! stands only if the relation, as it is now, still has that name under
//! the number the expected shape knows it by (Postgres: its attribute
//! number).
//!
//! A logged change of shape (a DDL "transaction" of the memory upstream)
//! stands for the `Relation` message its relation's next change brings,
//! judged at once so that a change of shape with no change of rows after
//! it still reaches the views. One that another change of the same
//! relation follows before any of its rows changed is never shown when it
//! is replayed: Postgres sends no DDL, and no row ever had that shape. So a
//! column dropped and added again under its name while the engine was down
//! says nothing at all on the replay, as on Postgres — and only the numbers
//! a copy was stored with tell it from the column it was made of. Nor does
//! the transaction: one left with nothing to show is not sent at all (no
//! `Begin`, no `Commit`), as Postgres 15 skips empty transactions.

use std::collections::{BTreeMap, BTreeSet};

use futures::channel::mpsc;

use super::upstream::{shaped_rel, LogEntry, Table};
use crate::change::{Change, StreamEvent};
use crate::error::SourceError;
use crate::schema::{Column, ColumnMatch, RelationSchema, SourceRelId};

/// A relation's columns as the feed expects them, with the upstream's
/// number for each where it is known.
#[derive(Clone, Debug)]
struct Expected {
    columns: Vec<Column>,
    ids: Vec<Option<u32>>,
}

/// The expected shapes of one source instance (one engine process), shared
/// by its `prepare` and its feeds.
#[derive(Debug, Default)]
pub(super) struct Shapes {
    /// The instance they belong to: another one (the engine restarted)
    /// starts with none, as a new process does.
    owner: Option<u64>,
    expected: BTreeMap<SourceRelId, Expected>,
    /// Relations described otherwise than expected since the feed last
    /// said anything of them: a copy reads by another shape than the feed
    /// expects, so the next judgement reports a change even if the rows read
    /// as expected (a column added while no feed announced it, then
    /// dropped again: the copies made in between have it).
    unsettled: BTreeSet<SourceRelId>,
    /// Relations the open feed has judged since it began or since their
    /// shape last changed (`pgoutput` sent their `Relation` message).
    judged: BTreeSet<SourceRelId>,
}

impl Shapes {
    /// Makes these the shapes of source instance `instance`, forgetting
    /// another instance's.
    pub(super) fn owned_by(&mut self, instance: u64) {
        if self.owner != Some(instance) {
            *self = Shapes { owner: Some(instance), ..Shapes::default() };
        }
    }

    /// `prepare` described the relation like this: expected, unless a shape
    /// is expected already (then unsettled if it differs).
    pub(super) fn described(&mut self, schema: &RelationSchema) {
        let ids: Vec<Option<u32>> = if schema.column_ids.len() == schema.columns.len() {
            schema.column_ids.iter().map(|&id| Some(id)).collect()
        } else {
            vec![None; schema.columns.len()]
        };
        match self.expected.get(&schema.source_id) {
            Some(was) if was.columns != schema.columns || was.ids != ids => {
                self.unsettled.insert(schema.source_id);
            }
            Some(_) => {}
            None => {
                self.expected.insert(schema.source_id, Expected { columns: schema.columns.clone(), ids });
            }
        }
    }

    /// A feed begins: it judges every relation afresh.
    pub(super) fn feed_began(&mut self) {
        self.judged.clear();
    }

    /// The feed was dropped: nothing is expected any more.
    pub(super) fn clear(&mut self) {
        self.expected.clear();
        self.unsettled.clear();
        self.judged.clear();
    }

    /// Expects `now`, numbered by the relation as it is (a column it lacks
    /// stays unnumbered, and the next judgement cannot vouch for it).
    fn expect(&mut self, rel: SourceRelId, now: &[Column], table: Option<&Table>) {
        let ids = now.iter().map(|c| table.and_then(|t| t.column_id(&c.name))).collect();
        self.expected.insert(rel, Expected { columns: now.to_vec(), ids });
        self.judged.insert(rel);
    }
}

/// `now`'s columns matched to `was`'s by name and type, each match kept only
/// if `table` (the relation as it is now) has that name under the number
/// `was` knows the column by; and whether that makes a change.
fn judge(was: &Expected, now: &[Column], table: Option<&Table>) -> (Vec<ColumnMatch>, bool) {
    let mut matches = ColumnMatch::between(&was.columns, now, |c| c.name.as_str());
    for m in &mut matches {
        let Some(before) = m.before else { continue };
        let known = was.ids.get(before).copied().flatten();
        let vouched = known.is_some_and(|id| table.is_some_and(|t| t.column_id(&m.name) == Some(id)));
        if !vouched {
            m.before = None;
        }
    }
    let changed = was.columns.len() != now.len() || matches.iter().enumerate().any(|(i, m)| m.before != Some(i));
    (matches, changed)
}

/// For each of `entries` (a replay, in log order), the relations whose
/// change of shape in it is never shown: another change of shape of the
/// same relation follows before any change of its rows.
pub(super) fn unseen_shapes<'a>(entries: impl DoubleEndedIterator<Item = &'a LogEntry>) -> Vec<BTreeSet<SourceRelId>> {
    // Relations whose next event, looking forward from here, is a change
    // of shape.
    let mut reshaped_next = BTreeSet::new();
    let mut unseen: Vec<BTreeSet<SourceRelId>> = entries
        .rev()
        .map(|entry| {
            let mut here = BTreeSet::new();
            for e in entry.events.iter().rev() {
                match e {
                    StreamEvent::SchemaChanged { rel, .. } => {
                        if !reshaped_next.insert(*rel) {
                            here.insert(*rel);
                        }
                    }
                    // `pgoutput` describes a truncated relation too.
                    StreamEvent::Change(Change::Truncate { rels, .. }) => {
                        for rel in rels {
                            reshaped_next.remove(rel);
                        }
                    }
                    e => {
                        if let Some(rel) = shaped_rel(e) {
                            reshaped_next.remove(&rel);
                        }
                    }
                }
            }
            here
        })
        .collect();
    unseen.reverse();
    unseen
}

/// Sends one logged transaction on a feed, announcing its relations'
/// shapes as the module doc says. `unseen`: the relations whose change of
/// shape in this entry is never shown (see [`unseen_shapes`]).
pub(super) fn send_entry(
    shapes: &mut Shapes,
    tables: &BTreeMap<(String, String), Table>,
    tx: &mpsc::UnboundedSender<Result<StreamEvent, SourceError>>,
    entry: &LogEntry,
    unseen: &BTreeSet<SourceRelId>,
) {
    let table = |rel: SourceRelId| tables.values().find(|t| t.id == rel);
    // What the transaction shows, held until its end: one that shows
    // nothing is not sent at all.
    let mut shown: Vec<StreamEvent> = Vec::new();
    for e in &entry.events {
        let now = shaped_rel(e).and_then(|rel| Some((rel, entry.shapes.get(&rel)?)));
        match (e, now) {
            (StreamEvent::SchemaChanged { rel, detail, .. }, Some((_, now))) => {
                // Its next change brings a `Relation` message again.
                shapes.judged.remove(rel);
                if unseen.contains(rel) {
                    continue;
                }
                match shapes.expected.get(rel) {
                    Some(was) => {
                        let (columns, changed) = judge(was, now, table(*rel));
                        if shapes.unsettled.remove(rel) || changed {
                            shown.push(StreamEvent::SchemaChanged {
                                rel: *rel,
                                detail: detail.clone(),
                                columns: Some(columns),
                            });
                        }
                    }
                    None => shown.push(e.clone()),
                }
                shapes.expect(*rel, now, table(*rel));
            }
            (StreamEvent::Change(_), Some((rel, now))) => {
                match shapes.expected.get(&rel) {
                    Some(was) if !shapes.judged.contains(&rel) || was.columns != *now => {
                        let (columns, changed) = judge(was, now, table(rel));
                        if shapes.unsettled.remove(&rel) || changed {
                            let detail = if was.columns == *now {
                                format!("relation {} arrives with columns the catalog no longer vouches for, or described otherwise since", rel.0)
                            } else {
                                format!("relation {} arrives with other columns than described", rel.0)
                            };
                            shown.push(StreamEvent::SchemaChanged { rel, detail, columns: Some(columns) });
                            shapes.expect(rel, now, table(rel));
                        } else {
                            shapes.judged.insert(rel);
                        }
                    }
                    Some(_) => {}
                    None => shapes.expect(rel, now, table(rel)),
                }
                shown.push(e.clone());
            }
            _ => shown.push(e.clone()),
        }
    }
    // Postgres (15 on) sends nothing for a transaction with nothing to show
    // — a change of shape kept silent is one, as it streams no DDL — and
    // the feed's position moves on with its next keepalive instead. (A
    // change of shape announced here stands for the `Relation` message of
    // the relation's next change, and is sent in its transaction.)
    if shown.is_empty() {
        return;
    }
    let send = |e: StreamEvent| {
        let _ = tx.unbounded_send(Ok(e));
    };
    send(StreamEvent::Begin { xid: entry.xid, final_lsn: entry.final_lsn, commit_time: entry.commit_time });
    shown.into_iter().for_each(send);
    send(StreamEvent::Commit { end_lsn: entry.end_lsn });
}
