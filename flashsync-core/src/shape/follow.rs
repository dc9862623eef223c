//! Following a relation's shape change with an existing copy.
//!
//! When columns are added to a table (or ones a view does not keep are
//! dropped), what a live view stores has not changed: only where its
//! columns sit in the rows the feed sends. Until the view's new copy
//! replaces it, its old copy can go on taking the feed through the same
//! view laid over the relation as it now is.

use crate::schema::ColumnMatch;
use crate::view::ViewDef;

use super::ViewShape;

impl ViewShape {
    /// This view read from its relation after a shape change that left it
    /// with the columns `after`: the same local columns, key and filter,
    /// taken from where they are now. `None` when a column the view keeps,
    /// filters on or is keyed by did not survive unchanged — the copy then
    /// cannot follow the feed.
    pub fn follow(&self, def: &ViewDef, after: &[ColumnMatch]) -> Option<ViewShape> {
        let upstream = self.upstream.after_change(after)?;
        let mut def = def.clone();
        def.columns = Some(self.local.columns.iter().map(|c| c.name.clone()).collect());
        let mut shape = ViewShape::new(&def, upstream).ok()?;
        // The relation after the change has no source numbers for its
        // columns (the new ones' are not known), so compare without them.
        // The local columns are the ones the copy was made of — the source
        // matched each to itself — and keep their numbers.
        let same = shape.local.source_id == self.local.source_id && shape.local.same_shape(&self.local);
        if !same {
            return None;
        }
        shape.local.column_ids.clone_from(&self.local.column_ids);
        shape.local.filter_column_ids.clone_from(&self.local.filter_column_ids);
        Some(shape)
    }
}
