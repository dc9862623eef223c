//! Staged parts as bytes. A part of a large transaction waits in a store
//! until its commit; held as `RowOp` values it took ten times the memory of
//! its rows (a million staged rows came to about a gigabyte), so it is kept
//! in the encodings the stores already use for keys and rows, and decoded
//! one part at a time when the commit applies it.
//!
//! One operation is a tag byte and its fields, each length-prefixed: keys in
//! [`encode_key_into`] form, rows in [`encode_row_into`] form. A new image
//! with unchanged cells is its width, a bitmap of the unchanged positions,
//! and a row (unchanged cells as NULL). An `UpdateIf` filter is an index
//! into the part's filters (one `Arc` per view, shared by its operations).

use std::sync::Arc;

use crate::change::{Cell, RowOp};
use crate::codec::{decode_key, decode_row, encode_key_into, encode_row_into};
use crate::error::{StoreError, StoreErrorKind};
use crate::predicate::BoundPredicate;
use crate::value::{Key, Row, Value};

const INSERT: u8 = 0;
const UPDATE: u8 = 1;
const UPDATE_IF: u8 = 2;
const EVICT: u8 = 3;
const DELETE: u8 = 4;
const TRUNCATE: u8 = 5;

/// One staged part of one view: its operations as bytes.
#[derive(Debug, Default)]
pub(super) struct Part {
    /// The encoded operations (empty while they wait in a spill).
    pub bytes: Vec<u8>,
    pub ops: usize,
    filters: Vec<Arc<BoundPredicate>>,
}

impl Part {
    /// Encodes `ops`.
    pub fn encode(ops: &[RowOp]) -> Part {
        let mut part = Part { bytes: Vec::with_capacity(ops.len() * 48), ops: ops.len(), filters: Vec::new() };
        let mut scratch = Vec::new();
        for op in ops {
            part.push(op, &mut scratch);
        }
        part.bytes.shrink_to_fit();
        part
    }

    fn push(&mut self, op: &RowOp, scratch: &mut Vec<u8>) {
        let out = &mut self.bytes;
        match op {
            RowOp::Insert { key, row } => {
                out.push(INSERT);
                field(out, scratch, |s| encode_key_into(key, s));
                field(out, scratch, |s| encode_row_into(row, s));
            }
            RowOp::Update { old_key, key, new } => {
                out.push(UPDATE);
                keys(out, scratch, old_key.as_ref(), key);
                cells(out, scratch, new);
            }
            RowOp::UpdateIf { old_key, key, new, filter } => {
                out.push(UPDATE_IF);
                keys(out, scratch, old_key.as_ref(), key);
                cells(out, scratch, new);
                let index = match self.filters.iter().position(|f| Arc::ptr_eq(f, filter)) {
                    Some(i) => i,
                    None => {
                        self.filters.push(Arc::clone(filter));
                        self.filters.len() - 1
                    }
                };
                varint(index as u64, out);
            }
            RowOp::Evict { key } => {
                out.push(EVICT);
                field(out, scratch, |s| encode_key_into(key, s));
            }
            RowOp::Delete { key } => {
                out.push(DELETE);
                field(out, scratch, |s| encode_key_into(key, s));
            }
            RowOp::Truncate => out.push(TRUNCATE),
        }
    }

    /// The operations again, in order.
    pub fn decode(&self) -> Result<Vec<RowOp>, StoreError> {
        let mut r = Reader { bytes: &self.bytes, pos: 0 };
        let mut ops = Vec::with_capacity(self.ops);
        while r.pos < self.bytes.len() {
            let op = match r.byte()? {
                INSERT => RowOp::Insert { key: r.key()?, row: decode_row(r.field()?).map_err(corrupt)? },
                tag @ (UPDATE | UPDATE_IF) => {
                    let old_key = match r.byte()? {
                        0 => None,
                        _ => Some(r.key()?),
                    };
                    let key = r.key()?;
                    let new = r.cells()?;
                    if tag == UPDATE {
                        RowOp::Update { old_key, key, new }
                    } else {
                        let index = usize::try_from(r.varint()?).unwrap_or(usize::MAX);
                        let filter =
                            self.filters.get(index).cloned().ok_or_else(|| corrupt("a filter index out of range"))?;
                        RowOp::UpdateIf { old_key, key, new, filter }
                    }
                }
                EVICT => RowOp::Evict { key: r.key()? },
                DELETE => RowOp::Delete { key: r.key()? },
                TRUNCATE => RowOp::Truncate,
                other => return Err(corrupt(format!("unknown operation tag {other}"))),
            };
            ops.push(op);
        }
        Ok(ops)
    }
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::new(StoreErrorKind::Corrupt, "decode a staged part", e.to_string())
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends what `write` writes, length first.
fn field(out: &mut Vec<u8>, scratch: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    scratch.clear();
    write(scratch);
    varint(scratch.len() as u64, out);
    out.extend_from_slice(scratch);
}

fn keys(out: &mut Vec<u8>, scratch: &mut Vec<u8>, old_key: Option<&Key>, key: &Key) {
    match old_key {
        Some(old) => {
            out.push(1);
            field(out, scratch, |s| encode_key_into(old, s));
        }
        None => out.push(0),
    }
    field(out, scratch, |s| encode_key_into(key, s));
}

fn cells(out: &mut Vec<u8>, scratch: &mut Vec<u8>, new: &[Cell]) {
    varint(new.len() as u64, out);
    let mut bitmap = vec![0u8; new.len().div_ceil(8)];
    let mut row = Vec::with_capacity(new.len());
    for (i, cell) in new.iter().enumerate() {
        match cell {
            Cell::Set(v) => row.push(v.clone()),
            Cell::Unchanged => {
                bitmap[i / 8] |= 1 << (i % 8);
                row.push(Value::Null);
            }
        }
    }
    out.extend_from_slice(&bitmap);
    field(out, scratch, |s| encode_row_into(&Row(row), s));
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, StoreError> {
        let b = *self.bytes.get(self.pos).ok_or_else(|| corrupt("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, StoreError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt("a length longer than 64 bits"))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], StoreError> {
        let end = usize::try_from(n).ok().and_then(|n| self.pos.checked_add(n)).ok_or_else(|| corrupt("truncated"))?;
        let s = self.bytes.get(self.pos..end).ok_or_else(|| corrupt("truncated"))?;
        self.pos = end;
        Ok(s)
    }

    fn field(&mut self) -> Result<&'a [u8], StoreError> {
        let n = self.varint()?;
        self.take(n)
    }

    fn key(&mut self) -> Result<Key, StoreError> {
        decode_key(self.field()?).map_err(corrupt)
    }

    fn cells(&mut self) -> Result<Vec<Cell>, StoreError> {
        let width = self.varint()?;
        let bitmap = self.take(width.div_ceil(8))?;
        let row = decode_row(self.field()?).map_err(corrupt)?;
        if row.0.len() as u64 != width {
            return Err(corrupt(format!("a new image of {} values where {width} were written", row.0.len())));
        }
        Ok(row
            .0
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let unchanged = bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0);
                if unchanged {
                    Cell::Unchanged
                } else {
                    Cell::Set(v)
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predicate::Predicate;
    use crate::schema::Column;
    use crate::{key, row};

    #[test]
    fn every_operation_comes_back_as_it_went_in() {
        let columns = vec![Column { name: "id".into(), type_name: "int8".into() }];
        let filter = Arc::new(Predicate::parse("id > 1").expect("parse").bind(&columns).expect("bind"));
        let ops = vec![
            RowOp::Insert { key: key![1], row: row![1, "a", 2.5] },
            RowOp::Update { old_key: None, key: key![1], new: vec![Cell::Set(Value::Int(1)), Cell::Unchanged] },
            RowOp::Update {
                old_key: Some(key![1]),
                key: key![2],
                new: (0..9).map(|i| if i % 3 == 0 { Cell::Unchanged } else { Cell::Set(Value::Null) }).collect(),
            },
            RowOp::UpdateIf { old_key: None, key: key![2], new: vec![Cell::Unchanged], filter: filter.clone() },
            RowOp::UpdateIf { old_key: Some(key![2]), key: key![3], new: vec![], filter },
            RowOp::Evict { key: key!["x", 1] },
            RowOp::Delete { key: key![3] },
            RowOp::Truncate,
            RowOp::Insert { key: key![Value::Bytes(vec![0, 255])], row: row![Value::Null] },
        ];
        let part = Part::encode(&ops);
        assert_eq!(part.ops, ops.len());
        assert_eq!(part.filters.len(), 1, "one filter, shared");
        assert_eq!(part.decode().expect("decode"), ops);
    }

    #[test]
    fn damaged_bytes_are_errors_not_panics() {
        let part = Part::encode(&[RowOp::Insert { key: key![1], row: row![1, "abc"] }]);
        for cut in 0..part.bytes.len() {
            let damaged = Part { bytes: part.bytes[..cut].to_vec(), ops: 1, filters: Vec::new() };
            assert!(cut == 0 || damaged.decode().is_err(), "cut at {cut}");
        }
        let unknown = Part { bytes: vec![99], ops: 1, filters: Vec::new() };
        assert!(unknown.decode().is_err());
    }
}
