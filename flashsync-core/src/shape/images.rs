//! A change's row images read once, for every filtered view of its relation.
//!
//! Twenty views of one table each ask of every change "is the new row in
//! me?" and "was the old one?". The answers need the new row as values (an
//! update sends cells, some of them unchanged TOAST markers): building that
//! row once per change rather than once per view keeps the cost of one more
//! view to evaluating its filter.

use std::borrow::Cow;

use crate::change::{Cell, Change, OldRow};
use crate::value::Value;

/// The row images of one [`Change`], as the filters of its views read them.
#[derive(Debug)]
pub struct ChangeImages<'c> {
    change: &'c Change,
    /// The new row's values, for inserts and updates. An update's unchanged
    /// values come from the whole old row when the source sent one; the
    /// others are `Null` here and listed in `unknown`.
    new: Option<Cow<'c, [Value]>>,
    /// Upstream columns of `new` whose value the change did not carry.
    unknown: Vec<usize>,
}

impl<'c> ChangeImages<'c> {
    /// Reads `change`.
    pub fn new(change: &'c Change) -> ChangeImages<'c> {
        let (new, unknown) = match change {
            Change::Insert { new, .. } => (Some(Cow::Borrowed(new.0.as_slice())), Vec::new()),
            Change::Update { old, new, .. } => {
                let whole = old.as_ref().and_then(OldRow::full).filter(|o| o.0.len() == new.len());
                let mut unknown = Vec::new();
                let values = new
                    .iter()
                    .enumerate()
                    .map(|(i, c)| match (c, whole.and_then(|o| o.0.get(i))) {
                        (Cell::Set(v), _) => v.clone(),
                        (Cell::Unchanged, Some(v)) => v.clone(),
                        (Cell::Unchanged, None) => {
                            unknown.push(i);
                            Value::Null
                        }
                    })
                    .collect::<Vec<_>>();
                (Some(Cow::Owned(values)), unknown)
            }
            Change::Delete { .. } | Change::Truncate { .. } => (None, Vec::new()),
        };
        ChangeImages { change, new, unknown }
    }

    /// The change.
    pub fn change(&self) -> &'c Change {
        self.change
    }

    /// The new row's values, with `Null` where the change did not carry one
    /// (see [`carries`](Self::carries)).
    pub(super) fn new_values(&self) -> Option<&[Value]> {
        self.new.as_deref()
    }

    /// Whether the new row's values at `columns` are all known.
    pub(super) fn carries(&self, columns: &[usize]) -> bool {
        self.unknown.iter().all(|u| !columns.contains(u))
    }

    /// Whether every value of the new row is known.
    pub(super) fn complete(&self) -> bool {
        self.unknown.is_empty()
    }
}
