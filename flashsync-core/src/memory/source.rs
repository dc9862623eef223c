//! The `Source` over a [`MemoryUpstream`], and the replication feed it
//! delivers the log on.

use async_trait::async_trait;
use futures::channel::mpsc;
use futures::StreamExt;

use super::faults::FailPoint;
use super::shapes::{send_entry, unseen_shapes};
use super::upstream::{MemoryUpstream, Slot, TableIdentity};
use crate::change::StreamEvent;
use crate::codec::encode_key;
use crate::error::{SourceError, SourceErrorKind};
use crate::lsn::Lsn;
use crate::schema::RelationSchema;
use crate::shape::ViewShape;
use crate::snapshot::SnapshotPoint;
use crate::source::{ChunkEnd, CopiedChunk, FeedStart, Feedback, SlotReport, Source, Subscription};
use crate::store::RowSink;
use crate::value::{Key, Row};
use crate::view::UpstreamRelation;

pub(super) struct ActiveFeed {
    pub(super) id: u64,
    pub(super) tx: mpsc::UnboundedSender<Result<StreamEvent, SourceError>>,
    /// Next log position to deliver (entries with `final_lsn >= from`).
    pub(super) from: Lsn,
}

impl MemoryUpstream {
    /// Sends a keepalive on the open feed, if any.
    pub fn keepalive(&self, reply_requested: bool) {
        let mut u = self.lock();
        let wal_end = u.lsn;
        if let Some(feed) = &mut u.feed {
            // Everything before wal_end has been delivered to this feed.
            let _ = feed.tx.unbounded_send(Ok(StreamEvent::Keepalive { wal_end, reply_requested }));
        }
    }
}

/// The `Source` over a [`MemoryUpstream`].
#[derive(Clone, Debug)]
pub struct MemorySource {
    pub(super) up: MemoryUpstream,
    /// Which source this is (an engine process, say): the feed's expected
    /// shapes are its own, as the Postgres source's are.
    pub(super) instance: u64,
}

struct MemoryFeedback {
    up: MemoryUpstream,
    feed: u64,
}

impl Feedback for MemoryFeedback {
    fn ack(&self, lsn: Lsn) {
        let mut u = self.up.lock();
        if u.feed.as_ref().map(|f| f.id) != Some(self.feed) {
            return;
        }
        let cur = u.lsn;
        if let Some(slot) = &mut u.slot {
            slot.confirmed_flush = slot.confirmed_flush.max(lsn.min(cur));
        }
        u.stats.max_ack = u.stats.max_ack.max(lsn);
    }
}

impl MemorySource {
    /// Copies the rows `shape` keeps, all of them or (`chunk`) those whose
    /// encoded key is above the given one, in key order, stopping at the
    /// first key boundary after the given number of rows.
    async fn copy(
        &self,
        relation: &UpstreamRelation,
        shape: &ViewShape,
        chunk: Option<(Option<Vec<u8>>, u64)>,
        sink: &mut dyn RowSink,
    ) -> Result<CopiedChunk, SourceError> {
        let schema = shape.upstream();
        let (rows, point, end, batch) = {
            let mut u = self.up.lock();
            u.take_fail(FailPoint::Snapshot)?;
            let k = (relation.schema.clone(), relation.table.clone());
            let t = u.tables.get(&k).ok_or_else(|| SourceError::relation_missing(relation))?;
            // The same columns by number too, as the Postgres source checks:
            // a column dropped and added again is another column.
            if !t.schema().fits(schema) {
                return Err(SourceError::new(
                    // Describing it again fixes this (as with Postgres).
                    SourceErrorKind::Other,
                    format!("{relation} changed shape since it was described"),
                ));
            }
            let visible = u.visible_rows(&k).unwrap_or_default();
            let mut keyed: Vec<(Vec<u8>, Key, Row, u64)> = Vec::new();
            for (r, n) in visible.values() {
                let Some(row) = shape.admit(r.clone()) else { continue };
                let key = shape.local().key_of(&row).map_err(|e| {
                    SourceError::new(SourceErrorKind::Other, format!("row of {relation} does not fit its key: {e}"))
                })?;
                keyed.push((encode_key(&key), key, row, *n));
            }
            keyed.sort_by(|a, b| a.0.cmp(&b.0));
            let mut end = ChunkEnd::Done;
            if let Some((after, limit)) = &chunk {
                if let Some(after) = after {
                    keyed.retain(|(k, ..)| k > after);
                }
                // Stop at the first key boundary after `limit` rows.
                let mut taken = 0u64;
                let mut cut = keyed.len();
                for (i, (_, key, _, n)) in keyed.iter().enumerate() {
                    if taken >= *limit {
                        cut = i;
                        break;
                    }
                    taken += n;
                    end = ChunkEnd::After(key.clone());
                }
                if cut == keyed.len() {
                    end = ChunkEnd::Done;
                }
                keyed.truncate(cut);
            }
            let rows: Vec<Row> =
                keyed.into_iter().flat_map(|(_, _, r, n)| std::iter::repeat_n(r, n as usize)).collect();
            let (xmin, xmax, xip) = u.snapshot_point();
            // What the Postgres source checks with pg_xact_status(): a
            // transaction the snapshot lists as in progress whose commit is
            // already logged (so the feed may have delivered it) would be in
            // neither the copy nor the stream after it (see the contract).
            if xip.iter().any(|x| u.invisible.contains_key(x)) {
                return Err(SourceError::new(
                    SourceErrorKind::Other,
                    format!(
                        "could not take a consistent snapshot of {relation}: transactions listed as in progress \
                         had already committed"
                    ),
                ));
            }
            let point = SnapshotPoint { xmin, xmax, xip, lsn: u.lsn, rows: rows.len() as u64 };
            *u.stats.snapshots.entry(relation.to_string()).or_default() += 1;
            if chunk.is_some() {
                u.stats.chunks += 1;
            }
            (rows, point, end, u.snapshot_batch)
        };
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<Row> = rows.by_ref().take(batch).collect();
            sink.write(chunk).await?;
        }
        Ok(CopiedChunk { point, end })
    }
}

#[async_trait]
impl Source for MemorySource {
    async fn prepare(&self, relation: &UpstreamRelation, feed: bool) -> Result<RelationSchema, SourceError> {
        let mut u = self.up.lock();
        u.take_fail(FailPoint::Prepare)?;
        let k = (relation.schema.clone(), relation.table.clone());
        let t = u.tables.get(&k).ok_or_else(|| SourceError::relation_missing(relation))?;
        if feed && t.identity == TableIdentity::Nothing {
            return Err(SourceError::new(
                SourceErrorKind::ReplicaIdentity,
                format!("{relation} has no primary key and REPLICA IDENTITY DEFAULT; realtime sync needs a primary key or REPLICA IDENTITY FULL"),
            ));
        }
        let schema = t.schema();
        // What the feed compares the rows it sends with.
        u.shapes.owned_by(self.instance);
        u.shapes.described(&schema);
        if feed {
            u.publication.insert(k);
        }
        u.stats.prepares += 1;
        Ok(schema)
    }

    async fn snapshot(
        &self,
        relation: &UpstreamRelation,
        shape: &ViewShape,
        sink: &mut dyn RowSink,
    ) -> Result<SnapshotPoint, SourceError> {
        Ok(self.copy(relation, shape, None, sink).await?.point)
    }

    async fn copy_chunk(
        &self,
        relation: &UpstreamRelation,
        shape: &ViewShape,
        after: Option<&Key>,
        rows: u64,
        sink: &mut dyn RowSink,
    ) -> Result<CopiedChunk, SourceError> {
        let after = after.map(encode_key);
        self.copy(relation, shape, Some((after, rows.max(1))), sink).await
    }

    async fn subscribe(&self, resume: Option<Lsn>) -> Result<Subscription, SourceError> {
        let mut u = self.up.lock();
        u.take_fail(FailPoint::Subscribe)?;
        // A feed whose reader is gone is inactive, as a slot is once its
        // walsender exits.
        if u.feed.as_ref().is_some_and(|f| f.tx.is_closed()) {
            u.feed = None;
            u.stats.active_feeds = 0;
        }
        if u.feed.is_some() {
            u.stats.refused_subscriptions += 1;
            return Err(SourceError::new(
                SourceErrorKind::Refused,
                format!("replication slot {:?} is active for another connection", u.slot_name),
            ));
        }
        let cur = u.lsn;
        let name = u.slot_name.clone();
        // Creating a slot waits until every transaction already committed to
        // the log is visible (Postgres waits for running transactions before
        // its consistent point); otherwise such a commit would be neither in
        // the feed nor in a later snapshot.
        if u.slot.is_none() || u.slot.as_ref().is_some_and(|s| s.invalidated) {
            u.invisible.clear();
        }
        let start = match &u.slot {
            None => {
                u.slot = Some(Slot { confirmed_flush: cur, invalidated: false });
                u.stats.slots_created += 1;
                FeedStart::Created { consistent_point: cur }
            }
            Some(s) if s.invalidated => {
                u.slot = Some(Slot { confirmed_flush: cur, invalidated: false });
                u.stats.slots_created += 1;
                FeedStart::Recreated {
                    consistent_point: cur,
                    reason: format!("replication slot {name:?} was invalidated (wal_status = lost)"),
                }
            }
            Some(s) => FeedStart::Existing { confirmed_flush: s.confirmed_flush },
        };
        let confirmed = u.slot.as_ref().map_or(cur, |s| s.confirmed_flush);
        let from = if u.replay_from_confirmed { confirmed } else { resume.unwrap_or(Lsn::ZERO).max(confirmed) };
        let (tx, rx) = mpsc::unbounded();
        let mut next = from;
        let up = &mut *u;
        up.shapes.owned_by(self.instance);
        up.shapes.feed_began();
        let replay = || up.log.iter().filter(|e| e.final_lsn >= from);
        let unseen = unseen_shapes(replay());
        for (entry, unseen) in replay().zip(&unseen) {
            send_entry(&mut up.shapes, &up.tables, &tx, entry, unseen);
            next = entry.end_lsn;
        }
        let id = u.next_feed;
        u.next_feed += 1;
        u.feed = Some(ActiveFeed { id, tx, from: next.max(from) });
        u.stats.subscribes += 1;
        u.stats.active_feeds = 1;
        u.stats.max_active_feeds = u.stats.max_active_feeds.max(1);
        Ok(Subscription {
            report: SlotReport { slot_id: name, start },
            events: rx.boxed(),
            feedback: Box::new(MemoryFeedback { up: self.up.clone(), feed: id }),
        })
    }

    async fn release(&self, relation: &UpstreamRelation) -> Result<(), SourceError> {
        let mut u = self.up.lock();
        u.take_fail(FailPoint::Release)?;
        u.publication.remove(&(relation.schema.clone(), relation.table.clone()));
        Ok(())
    }

    async fn drop_feed(&self) -> Result<(), SourceError> {
        let mut u = self.up.lock();
        u.take_fail(FailPoint::Release)?;
        u.feed = None;
        u.stats.active_feeds = 0;
        u.slot = None;
        u.publication.clear();
        u.shapes.clear();
        Ok(())
    }

    async fn server_position(&self) -> Result<crate::source::ServerPosition, SourceError> {
        let u = self.up.lock();
        let retained = u.slot.as_ref().map(|s| u.lsn.0.saturating_sub(s.confirmed_flush.0));
        Ok(crate::source::ServerPosition {
            current: u.lsn,
            retained_bytes: retained,
            confirmed: u.slot.as_ref().map(|s| s.confirmed_flush),
        })
    }
}

impl MemorySource {
    /// The upstream this source reads.
    pub fn upstream(&self) -> &MemoryUpstream {
        &self.up
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use futures::StreamExt;

    use super::*;
    use crate::value::Value;

    /// A replay of changes made before a column was dropped, after
    /// `prepare` described the table as it is now: the feed announces the
    /// old shape before the first of them (as the Postgres source does,
    /// comparing each `Relation` message with what it described), then the
    /// drop again when the replay reaches it.
    #[test]
    fn a_replay_announces_the_shape_its_rows_have() {
        let up = MemoryUpstream::new();
        let columns = [("id", "int8"), ("gone", "int8"), ("kept", "int8")];
        up.create_table("public", "t", &columns, TableIdentity::PrimaryKey(vec![0]));
        let relation = UpstreamRelation { schema: "public".into(), table: "t".into() };
        let source = up.source();
        block_on(source.prepare(&relation, true)).expect("prepare");
        drop(block_on(source.subscribe(None)).expect("subscribe"));
        up.insert("public", "t", Row(vec![Value::Int(1), Value::Int(10), Value::Int(100)]));
        assert!(up.drop_column("public", "t", "gone").xid().is_some());
        // The restart (another source, as another process): described as
        // it is now, then the feed replays.
        let source = up.source();
        let now = block_on(source.prepare(&relation, true)).expect("prepare");
        assert_eq!(now.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["id", "kept"]);
        let mut sub = block_on(source.subscribe(None)).expect("subscribe");
        let mut events = Vec::new();
        while events.iter().filter(|e| matches!(e, StreamEvent::Commit { .. })).count() < 2 {
            events.push(block_on(sub.events.next()).expect("an event").expect("no error"));
        }
        let shapes: Vec<Vec<(String, Option<usize>)>> = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::SchemaChanged { columns: Some(c), .. } => {
                    Some(c.iter().map(|m| (m.name.clone(), m.before)).collect())
                }
                _ => None,
            })
            .collect();
        let pairs = |v: &[(&str, Option<usize>)]| v.iter().map(|(n, b)| ((*n).to_owned(), *b)).collect::<Vec<_>>();
        assert_eq!(
            shapes,
            vec![
                pairs(&[("id", Some(0)), ("gone", None), ("kept", Some(1))]),
                pairs(&[("id", Some(0)), ("kept", Some(2))]),
            ],
            "{events:#?}"
        );
        let first_change = events.iter().position(|e| matches!(e, StreamEvent::Change(_)));
        let first_shape = events.iter().position(|e| matches!(e, StreamEvent::SchemaChanged { .. }));
        assert!(first_shape < first_change, "the old shape is announced before its row: {events:#?}");
    }

    /// A column dropped and added again under its name while no feed was
    /// read, then a row inserted: the replay sends nothing for the two DDL
    /// transactions — no `Begin`, no `Commit` — as Postgres 15 sends nothing
    /// for a transaction without a change to show; the insert's transaction
    /// comes first.
    #[test]
    fn a_transaction_with_nothing_to_show_is_not_sent() {
        let up = MemoryUpstream::new();
        up.create_table("public", "t", &[("id", "int8"), ("note", "int8")], TableIdentity::PrimaryKey(vec![0]));
        let relation = UpstreamRelation { schema: "public".into(), table: "t".into() };
        let source = up.source();
        block_on(source.prepare(&relation, true)).expect("prepare");
        drop(block_on(source.subscribe(None)).expect("subscribe"));
        let dropped = up.drop_column("public", "t", "note").xid().expect("dropped");
        let added = up.add_column("public", "t", "note", "int8", Value::Null).xid().expect("added");
        let inserted = up.insert("public", "t", Row(vec![Value::Int(1), Value::Int(2)]));
        // Another process: described as it is now, then the replay.
        let source = up.source();
        block_on(source.prepare(&relation, true)).expect("prepare");
        let mut sub = block_on(source.subscribe(None)).expect("subscribe");
        let mut events = Vec::new();
        while !events.iter().any(|e| matches!(e, StreamEvent::Commit { .. })) {
            events.push(block_on(sub.events.next()).expect("an event").expect("no error"));
        }
        // The first transaction sent is the insert, and it is sent whole.
        let begun = events.iter().filter(|e| matches!(e, StreamEvent::Begin { .. })).count();
        assert_eq!(begun, 1, "DDL transactions {dropped} and {added} were sent: {events:#?}");
        assert!(matches!(events.last(), Some(StreamEvent::Commit { end_lsn }) if *end_lsn == inserted), "{events:#?}");
        assert!(events.iter().any(|e| matches!(e, StreamEvent::Change(_))), "{events:#?}");
    }
}
