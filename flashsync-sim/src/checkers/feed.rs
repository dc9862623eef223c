//! The change feed's checker: what the store reports a batch did
//! ([`ApplyReport::changes`]) must be exactly what it did.
//!
//! Each view's rows are followed from the moment a batch first touches it
//! (read from the store just before) by applying the captured changes only;
//! after every apply run the result must equal the store's copy. A
//! publish, a forget or a crash ends the following (a reader of the feed
//! reads the view again then), and the next batch starts it afresh. Inserts
//! of rows a keyed view holds, and updates or deletes of rows it does not,
//! are violations too: a reader relies on the kind.
//!
//! [`ApplyReport::changes`]: flashsync_core::ApplyReport::changes

use std::collections::BTreeMap;

use flashsync_core::{Identity, Key, RelationId, RelationSchema, Row, RowChange, ViewChanges};

/// One view's rows as a reader of its changes knows them.
struct Followed {
    multiset: bool,
    rows: BTreeMap<Key, Vec<Row>>,
}

/// The rows of every followed view.
#[derive(Default)]
pub(crate) struct FeedMirror {
    views: BTreeMap<RelationId, Followed>,
}

impl FeedMirror {
    /// Whether `id` is followed.
    pub fn follows(&self, id: RelationId) -> bool {
        self.views.contains_key(&id)
    }

    /// Starts following `id` from its current `rows`.
    pub fn start(&mut self, id: RelationId, schema: &RelationSchema, rows: Vec<Row>) {
        let mut followed = Followed { multiset: schema.identity == Identity::FullRow, rows: BTreeMap::new() };
        for row in rows {
            let key = Key(schema.key.iter().filter_map(|&i| row.0.get(i).cloned()).collect());
            followed.rows.entry(key).or_default().push(row);
        }
        self.views.insert(id, followed);
    }

    /// Stops following `id` (its copy was replaced or forgotten).
    pub fn stop(&mut self, id: RelationId) {
        self.views.remove(&id);
    }

    /// Stops following everything (the process crashed).
    pub fn clear(&mut self) {
        self.views.clear();
    }

    /// Applies one batch's captured changes.
    pub fn apply(&mut self, changes: &[ViewChanges]) -> Result<(), String> {
        for vc in changes {
            let Some(v) = self.views.get_mut(&vc.relation_id) else {
                return Err(format!("changes reported for view {} that the batch did not touch", vc.relation_id));
            };
            for change in &vc.changes {
                v.apply(change).map_err(|e| format!("view {}: {e}", vc.relation_id))?;
            }
        }
        Ok(())
    }

    /// Compares a followed view with the store's copy.
    pub fn check(&self, id: RelationId, store_rows: &[Row]) -> Result<(), String> {
        let Some(v) = self.views.get(&id) else { return Ok(()) };
        let mut followed: Vec<&Row> = v.rows.values().flatten().collect();
        let mut stored: Vec<&Row> = store_rows.iter().collect();
        followed.sort();
        stored.sort();
        if followed == stored {
            return Ok(());
        }
        let missing: Vec<&&Row> = stored.iter().filter(|r| !followed.contains(r)).take(3).collect();
        let extra: Vec<&&Row> = followed.iter().filter(|r| !stored.contains(r)).take(3).collect();
        Err(format!(
            "view {id}: its changes give {} rows, the store holds {}; in the store only: {missing:?}; from the \
             changes only: {extra:?}",
            followed.len(),
            stored.len()
        ))
    }
}

impl Followed {
    fn apply(&mut self, change: &RowChange) -> Result<(), String> {
        match change {
            RowChange::Insert { key, row } => {
                let held = self.rows.entry(key.clone()).or_default();
                if !self.multiset && !held.is_empty() {
                    return Err(format!("insert of key {key:?}, which the view holds"));
                }
                held.push(row.clone());
            }
            RowChange::Update { key, row } => match self.rows.get_mut(key) {
                Some(held) if !held.is_empty() && !self.multiset => *held = vec![row.clone()],
                _ => return Err(format!("update of key {key:?}, which the view does not hold (or holds copies of)")),
            },
            RowChange::Delete { key } => {
                let Some(held) = self.rows.get_mut(key) else {
                    return Err(format!("delete of key {key:?}, which the view does not hold"));
                };
                held.pop();
                if held.is_empty() {
                    self.rows.remove(key);
                }
            }
            RowChange::Truncate => self.rows.clear(),
        }
        Ok(())
    }
}
