//! Rows already in their stored encoding, with their encoded keys.
//!
//! A snapshot moves millions of rows from a source's wire format into a
//! store. Building a [`Row`] per row costs an allocation per row and per text
//! value, which the store then throws away after encoding it. A source that
//! parses its own format can instead push each value, borrowed, into an
//! [`EncodedRowsBuilder`], which appends it to one buffer in the
//! [row encoding](crate::codec) and, for key columns, to another in the
//! [key encoding](crate::codec::encode_key); the batch goes to
//! [`RowSink::write_encoded`](crate::RowSink::write_encoded). The bytes are
//! exactly those of [`encode_row`](crate::codec::encode_row) and
//! [`encode_key`](crate::codec::encode_key) of the same values, so a store
//! can keep them as they are — and one that wants rows can
//! [`decode`](EncodedRows::decode) them.
//!
//! ```
//! use flashsync_core::{Column, EncodedRowsBuilder, RelationSchema, Row, SourceRelId, Value, ValueRef};
//! use flashsync_core::codec::{encode_key, encode_row};
//!
//! let schema = RelationSchema::keyed(
//!     SourceRelId(1),
//!     vec![
//!         Column { name: "name".into(), type_name: "text".into() },
//!         Column { name: "id".into(), type_name: "int8".into() },
//!     ],
//!     vec![1],
//! );
//! let mut batch = EncodedRowsBuilder::new(&schema);
//! batch.push(ValueRef::Text("ada"));
//! batch.push(ValueRef::Int(7));
//! batch.finish_row()?;
//! let rows = batch.take();
//!
//! let row = Row(vec![Value::Text("ada".into()), Value::Int(7)]);
//! let (key, bytes) = rows.iter().next().unwrap();
//! assert_eq!(key, encode_key(&schema.key_of(&row)?));
//! assert_eq!(bytes, encode_row(&row));
//! assert_eq!(rows.decode()?, vec![row]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::codec::{self, CodecError};
use crate::schema::{RelationSchema, ShapeError};
use crate::value::{Row, ValueRef};

/// A batch of rows in the stored row encoding, each with its encoded key,
/// for the schema shape they were built for (see the [module](self)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodedRows {
    width: usize,
    key: Vec<usize>,
    keys: Vec<u8>,
    rows: Vec<u8>,
    /// Where each row's key and row bytes end.
    ends: Vec<(usize, usize)>,
}

impl EncodedRows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes held (keys and rows).
    pub fn byte_len(&self) -> usize {
        self.keys.len() + self.rows.len()
    }

    /// The row width and key columns the rows were encoded for: a store
    /// refuses a batch whose shape is not its schema's.
    pub fn shape(&self) -> (usize, &[usize]) {
        (self.width, &self.key)
    }

    /// Whether the rows were encoded for `schema`'s width and key.
    pub fn fits(&self, schema: &RelationSchema) -> bool {
        self.width == schema.columns.len() && self.key == schema.key
    }

    /// Each row's encoded key and encoded row, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + '_ {
        let mut start = (0, 0);
        self.ends.iter().map(move |&(key_end, row_end)| {
            let key = self.keys.get(start.0..key_end).unwrap_or_default();
            let row = self.rows.get(start.1..row_end).unwrap_or_default();
            start = (key_end, row_end);
            (key, row)
        })
    }

    /// The rows, decoded.
    pub fn decode(&self) -> Result<Vec<Row>, CodecError> {
        self.iter().map(|(_, row)| codec::decode_row(row)).collect()
    }
}

/// Builds an [`EncodedRows`] batch one value at a time, for one schema.
#[derive(Clone, Debug)]
pub struct EncodedRowsBuilder {
    batch: EncodedRows,
    /// For each column, its slot in `slots` if it is part of the key.
    slot_of_column: Vec<Option<usize>>,
    /// For each key position, the slot holding its column's key encoding.
    slot_of_key: Vec<usize>,
    /// The current row's key columns, key-encoded.
    slots: Vec<Vec<u8>>,
    /// Values pushed for the current row; `None` before its first value.
    pushed: Option<usize>,
}

impl EncodedRowsBuilder {
    /// A builder for rows of `schema`.
    pub fn new(schema: &RelationSchema) -> Self {
        let width = schema.columns.len();
        let mut slot_of_column = vec![None; width];
        let mut slot_of_key = Vec::with_capacity(schema.key.len());
        let mut slots = 0;
        for &column in &schema.key {
            let slot = match slot_of_column.get(column).copied().flatten() {
                Some(slot) => slot,
                None => {
                    let slot = slots;
                    slots += 1;
                    if let Some(entry) = slot_of_column.get_mut(column) {
                        *entry = Some(slot);
                    }
                    slot
                }
            };
            slot_of_key.push(slot);
        }
        EncodedRowsBuilder {
            batch: EncodedRows { width, key: schema.key.clone(), ..EncodedRows::default() },
            slot_of_column,
            slot_of_key,
            slots: vec![Vec::new(); slots],
            pushed: None,
        }
    }

    /// Appends the next column's value to the current row.
    pub fn push(&mut self, value: ValueRef<'_>) {
        let column = match self.pushed {
            Some(n) => n,
            None => self.start_row(),
        };
        self.pushed = Some(column + 1);
        if column >= self.batch.width {
            // Counted, not encoded: `finish_row` refuses the row.
            return;
        }
        codec::encode_row_value_into(value, &mut self.batch.rows);
        if let Some(slot) = self.slot_of_column.get(column).copied().flatten().and_then(|s| self.slots.get_mut(s)) {
            codec::encode_key_value_into(value, slot);
        }
    }

    /// Ends the current row. A row with as many values as the schema has
    /// columns joins the batch; any other is dropped and reported.
    pub fn finish_row(&mut self) -> Result<(), ShapeError> {
        let got = match self.pushed.take() {
            Some(n) => n,
            None => self.start_row(),
        };
        if got != self.batch.width {
            self.discard_current();
            return Err(ShapeError { expected: self.batch.width, got });
        }
        for &slot in &self.slot_of_key {
            if let Some(bytes) = self.slots.get(slot) {
                self.batch.keys.extend_from_slice(bytes);
            }
        }
        self.batch.ends.push((self.batch.keys.len(), self.batch.rows.len()));
        Ok(())
    }

    /// Drops the current row's values, if any (e.g. one failed to parse).
    pub fn discard_row(&mut self) {
        if self.pushed.take().is_some() {
            self.discard_current();
        }
    }

    /// Rows finished so far.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// Whether no row has been finished since the last [`take`](Self::take).
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Bytes held by finished rows.
    pub fn byte_len(&self) -> usize {
        self.batch.byte_len()
    }

    /// The finished rows; the builder starts a new batch (a row in progress
    /// is dropped).
    pub fn take(&mut self) -> EncodedRows {
        self.discard_row();
        // Sized like the batch before: batches are alike, and growing the
        // buffers by doubling would copy each several times.
        let b = &self.batch;
        let next = EncodedRows {
            width: b.width,
            key: b.key.clone(),
            keys: Vec::with_capacity(b.keys.len()),
            rows: Vec::with_capacity(b.rows.len()),
            ends: Vec::with_capacity(b.ends.len()),
        };
        std::mem::replace(&mut self.batch, next)
    }

    /// Starts a row: its header, and empty key slots. Returns its column count
    /// so far (0).
    fn start_row(&mut self) -> usize {
        codec::encode_row_header_into(self.batch.width, &mut self.batch.rows);
        self.slots.iter_mut().for_each(Vec::clear);
        0
    }

    /// Cuts the row buffer back to the end of the last finished row.
    fn discard_current(&mut self) {
        let end = self.batch.ends.last().map_or(0, |&(_, row_end)| row_end);
        self.batch.rows.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_key, encode_row};
    use crate::schema::Column;
    use crate::value::Value;
    use proptest::prelude::*;

    fn schema(width: usize, key: Vec<usize>) -> RelationSchema {
        let columns = (0..width).map(|i| Column { name: format!("c{i}"), type_name: "text".into() }).collect();
        RelationSchema::keyed(crate::SourceRelId(1), columns, key)
    }

    #[test]
    fn wrong_widths_are_refused_and_leave_no_trace() {
        let s = schema(2, vec![0]);
        let mut b = EncodedRowsBuilder::new(&s);
        b.push(ValueRef::Int(1));
        assert_eq!(b.finish_row(), Err(ShapeError { expected: 2, got: 1 }));
        for v in 0..3 {
            b.push(ValueRef::Int(v));
        }
        assert_eq!(b.finish_row(), Err(ShapeError { expected: 2, got: 3 }));
        assert_eq!(b.finish_row(), Err(ShapeError { expected: 2, got: 0 }));
        b.push(ValueRef::Int(5));
        b.discard_row();
        b.push(ValueRef::Int(2));
        b.push(ValueRef::Null);
        b.finish_row().unwrap();
        b.push(ValueRef::Int(9));
        let rows = b.take();
        assert_eq!(rows.decode().unwrap(), vec![Row(vec![Value::Int(2), Value::Null])]);
        assert!(b.is_empty());
        assert!(rows.fits(&s));
        assert!(!rows.fits(&schema(2, vec![1])));
    }

    fn any_value() -> impl Strategy<Value = Value> {
        crate::codec::tests::any_value()
    }

    proptest! {
        /// The bytes are those of `encode_row` and `encode_key(key_of)`, for
        /// any key (composite, out of column order, repeated columns).
        #[test]
        fn matches_the_row_and_key_encodings(
            rows in proptest::collection::vec(proptest::collection::vec(any_value(), 3), 0..8),
            key in proptest::collection::vec(0usize..3, 1..4),
        ) {
            let s = schema(3, key);
            let mut b = EncodedRowsBuilder::new(&s);
            for row in &rows {
                for v in row {
                    b.push(v.as_value_ref());
                }
                b.finish_row().unwrap();
            }
            let batch = b.take();
            prop_assert_eq!(batch.len(), rows.len());
            for ((key, bytes), values) in batch.iter().zip(&rows) {
                let row = Row(values.clone());
                prop_assert_eq!(key.to_vec(), encode_key(&s.key_of(&row).unwrap()));
                prop_assert_eq!(bytes.to_vec(), encode_row(&row));
            }
            prop_assert_eq!(batch.decode().unwrap(), rows.into_iter().map(Row).collect::<Vec<_>>());
        }
    }
}
