//! Byte encodings shared by every store: an order-preserving key encoding and
//! a compact row encoding.
//!
//! Key encoding: for keys `a` and `b`, `encode_key(a) < encode_key(b)`
//! (bytewise) exactly when `a < b`, so a byte-ordered store scans rows in key
//! order. Each value starts with a type tag that follows the [`Value`] order;
//! integers are big-endian with the sign bit flipped; floats use the IEEE 754
//! `totalOrder` bit trick; text and bytes escape `0x00` as `0x00 0xFF` and end
//! with `0x00 0x01`, so composite keys never compare across a boundary.
//!
//! Row encoding: a version byte, a varint column count, then per value a tag
//! and its payload (varint lengths). Decoding validates everything and returns
//! [`CodecError`] — never panics — on truncated or malformed bytes.

use crate::value::{Key, Row, Value, ValueRef};

const TAG_NULL: u8 = 0x01;
const TAG_BOOL: u8 = 0x02;
const TAG_INT: u8 = 0x03;
const TAG_FLOAT: u8 = 0x04;
const TAG_TEXT: u8 = 0x05;
const TAG_BYTES: u8 = 0x06;

const ROW_FORMAT_V1: u8 = 1;
/// A row with a copy count (full-row views hold multisets).
const ROW_FORMAT_COUNTED: u8 = 2;

/// Bytes that do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Input ended in the middle of a value.
    #[error("truncated {what} at byte {at}")]
    Truncated {
        /// What was being decoded.
        what: &'static str,
        /// Byte offset where input ran out.
        at: usize,
    },
    /// An unknown type tag.
    #[error("unknown value tag 0x{tag:02x} at byte {at}")]
    BadTag {
        /// The tag byte.
        tag: u8,
        /// Its offset.
        at: usize,
    },
    /// Text that is not UTF-8.
    #[error("text value at byte {at} is not valid UTF-8")]
    BadUtf8 {
        /// Offset of the value.
        at: usize,
    },
    /// A malformed escape or terminator in a key.
    #[error("bad escape byte 0x{byte:02x} at byte {at}")]
    BadEscape {
        /// The byte after `0x00`.
        byte: u8,
        /// Its offset.
        at: usize,
    },
    /// A row written by a format this version does not know.
    #[error("row format version {0} is not supported (this build reads version {ROW_FORMAT_V1})")]
    UnknownFormat(u8),
    /// Bytes left over after a complete row.
    #[error("{0} trailing bytes after the row")]
    Trailing(usize),
    /// A varint longer than 64 bits, or a length beyond the input.
    #[error("bad length at byte {at}")]
    BadLength {
        /// Offset of the length.
        at: usize,
    },
}

/// Appends the order-preserving encoding of `key` to `out`.
pub fn encode_key_into(key: &Key, out: &mut Vec<u8>) {
    encode_key_parts_into(&key.0, out);
}

/// Appends the order-preserving encoding of a key made of `parts` to `out`:
/// the same bytes as [`encode_key_into`] of `Key(parts)`, without building
/// the key (the hot path of a snapshot encodes keys straight from rows).
///
/// ```
/// use flashsync_core::codec::{encode_key, encode_key_parts_into};
/// use flashsync_core::{Key, Value};
/// let mut out = Vec::new();
/// encode_key_parts_into([&Value::Int(7), &Value::Text("a".into())], &mut out);
/// assert_eq!(out, encode_key(&Key(vec![Value::Int(7), Value::Text("a".into())])));
/// ```
pub fn encode_key_parts_into<'a>(parts: impl IntoIterator<Item = &'a Value>, out: &mut Vec<u8>) {
    for v in parts {
        encode_key_value_into(v.as_value_ref(), out);
    }
}

/// Appends the order-preserving encoding of one key value to `out`; a key's
/// encoding is that of its values, one after the other.
pub fn encode_key_value_into(v: ValueRef<'_>, out: &mut Vec<u8>) {
    match v {
        ValueRef::Null => out.push(TAG_NULL),
        ValueRef::Bool(b) => out.extend_from_slice(&[TAG_BOOL, u8::from(b)]),
        ValueRef::Int(i) => {
            out.push(TAG_INT);
            out.extend_from_slice(&((i as u64) ^ (1 << 63)).to_be_bytes());
        }
        ValueRef::Float(x) => {
            out.push(TAG_FLOAT);
            let bits = x.to_bits();
            let ordered = if bits >> 63 == 1 { !bits } else { bits | (1 << 63) };
            out.extend_from_slice(&ordered.to_be_bytes());
        }
        ValueRef::Text(s) => {
            out.push(TAG_TEXT);
            escape_into(s.as_bytes(), out);
        }
        ValueRef::Bytes(b) => {
            out.push(TAG_BYTES);
            escape_into(b, out);
        }
    }
}

/// The order-preserving encoding of `key`.
pub fn encode_key(key: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    encode_key_into(key, &mut out);
    out
}

fn escape_into(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        if b == 0 {
            out.extend_from_slice(&[0x00, 0xFF]);
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// Decodes a key written by [`encode_key`].
pub fn decode_key(mut bytes: &[u8]) -> Result<Key, CodecError> {
    let total = bytes.len();
    let mut values = Vec::new();
    while let Some((&tag, rest)) = bytes.split_first() {
        let at = total - bytes.len();
        bytes = rest;
        let value = match tag {
            TAG_NULL => Value::Null,
            TAG_BOOL => {
                let (&b, rest) = bytes.split_first().ok_or(CodecError::Truncated { what: "bool", at })?;
                bytes = rest;
                match b {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    _ => return Err(CodecError::BadTag { tag: b, at: at + 1 }),
                }
            }
            TAG_INT => {
                let (raw, rest) = take8(bytes, "int", at)?;
                bytes = rest;
                Value::Int((u64::from_be_bytes(raw) ^ (1 << 63)) as i64)
            }
            TAG_FLOAT => {
                let (raw, rest) = take8(bytes, "float", at)?;
                bytes = rest;
                let ordered = u64::from_be_bytes(raw);
                let bits = if ordered >> 63 == 1 { ordered & !(1 << 63) } else { !ordered };
                Value::Float(f64::from_bits(bits))
            }
            TAG_TEXT | TAG_BYTES => {
                let mut raw = Vec::new();
                loop {
                    let pos = total - bytes.len();
                    let (&b, rest) = bytes.split_first().ok_or(CodecError::Truncated { what: "key string", at })?;
                    bytes = rest;
                    if b != 0 {
                        raw.push(b);
                        continue;
                    }
                    let (&esc, rest) = bytes.split_first().ok_or(CodecError::Truncated { what: "key string", at })?;
                    bytes = rest;
                    match esc {
                        0xFF => raw.push(0),
                        0x01 => break,
                        other => return Err(CodecError::BadEscape { byte: other, at: pos + 1 }),
                    }
                }
                if tag == TAG_TEXT {
                    Value::Text(String::from_utf8(raw).map_err(|_| CodecError::BadUtf8 { at })?)
                } else {
                    Value::Bytes(raw)
                }
            }
            other => return Err(CodecError::BadTag { tag: other, at }),
        };
        values.push(value);
    }
    Ok(Key(values))
}

fn take8<'a>(bytes: &'a [u8], what: &'static str, at: usize) -> Result<([u8; 8], &'a [u8]), CodecError> {
    if bytes.len() < 8 {
        return Err(CodecError::Truncated { what, at });
    }
    let (head, rest) = bytes.split_at(8);
    let mut raw = [0u8; 8];
    raw.copy_from_slice(head);
    Ok((raw, rest))
}

fn put_varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self, what: &'static str) -> Result<u8, CodecError> {
        let b = *self.bytes.get(self.pos).ok_or(CodecError::Truncated { what, at: self.pos })?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let at = self.pos;
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte("varint")?;
            n |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(CodecError::BadLength { at })
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], CodecError> {
        let at = self.pos;
        let n = usize::try_from(n).map_err(|_| CodecError::BadLength { at })?;
        let end = at.checked_add(n).ok_or(CodecError::BadLength { at })?;
        let slice = self.bytes.get(at..end).ok_or(CodecError::Truncated { what, at })?;
        self.pos = end;
        Ok(slice)
    }
}

/// Appends the compact encoding of `row` to `out`.
pub fn encode_row_into(row: &Row, out: &mut Vec<u8>) {
    encode_row_header_into(row.0.len(), out);
    for v in &row.0 {
        encode_row_value_into(v.as_value_ref(), out);
    }
}

/// Appends the header of a row of `width` values to `out`: followed by
/// [`encode_row_value_into`] of each value, it makes the bytes
/// [`encode_row_into`] writes.
pub fn encode_row_header_into(width: usize, out: &mut Vec<u8>) {
    out.push(ROW_FORMAT_V1);
    put_varint(width as u64, out);
}

/// Appends the compact encoding of one row value to `out`.
pub fn encode_row_value_into(v: ValueRef<'_>, out: &mut Vec<u8>) {
    match v {
        ValueRef::Null => out.push(TAG_NULL),
        ValueRef::Bool(b) => out.extend_from_slice(&[TAG_BOOL, u8::from(b)]),
        ValueRef::Int(i) => {
            out.push(TAG_INT);
            // zig-zag keeps small negative numbers short
            put_varint(((i << 1) ^ (i >> 63)) as u64, out);
        }
        ValueRef::Float(x) => {
            out.push(TAG_FLOAT);
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        }
        ValueRef::Text(s) => {
            out.push(TAG_TEXT);
            put_varint(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
        ValueRef::Bytes(b) => {
            out.push(TAG_BYTES);
            put_varint(b.len() as u64, out);
            out.extend_from_slice(b);
        }
    }
}

/// The compact encoding of `row`.
pub fn encode_row(row: &Row) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + row.approx_size() / 2);
    encode_row_into(row, &mut out);
    out
}

/// The stored form of `copies` copies of `row`: identical to
/// [`encode_row`] when `copies == 1`.
pub fn encode_stored_row(row: &Row, copies: u64) -> Vec<u8> {
    let out = encode_row(row);
    if copies == 1 {
        return out;
    }
    counted(&out, copies)
}

/// The stored form of `copies` copies of the row `encoded` (as
/// [`encode_row`] wrote it): what [`encode_stored_row`] returns, without
/// decoding the row.
pub fn restore_copies(encoded: &[u8], copies: u64) -> Result<Vec<u8>, CodecError> {
    match encoded.first() {
        Some(&ROW_FORMAT_V1) if copies == 1 => Ok(encoded.to_vec()),
        Some(&ROW_FORMAT_V1) => Ok(counted(encoded, copies)),
        Some(&version) => Err(CodecError::UnknownFormat(version)),
        None => Err(CodecError::Truncated { what: "row header", at: 0 }),
    }
}

/// `single` (a one-copy row) with a copy count.
fn counted(single: &[u8], copies: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(single.len() + 4);
    out.push(ROW_FORMAT_COUNTED);
    put_varint(copies, &mut out);
    out.extend_from_slice(single.get(1..).unwrap_or_default());
    out
}

/// Decodes a row written by [`encode_row`] (one copy) or
/// [`encode_stored_row`]; returns the row and its number of copies.
pub fn decode_stored_row(bytes: &[u8]) -> Result<(Row, u64), CodecError> {
    let mut r = Reader { bytes, pos: 0 };
    let copies = match r.byte("row header")? {
        ROW_FORMAT_V1 => 1,
        ROW_FORMAT_COUNTED => r.varint()?,
        version => return Err(CodecError::UnknownFormat(version)),
    };
    Ok((decode_values(r)?, copies))
}

/// Decodes a row written by [`encode_row`] (or [`encode_stored_row`],
/// ignoring the copy count).
pub fn decode_row(bytes: &[u8]) -> Result<Row, CodecError> {
    decode_stored_row(bytes).map(|(row, _)| row)
}

fn decode_values(mut r: Reader<'_>) -> Result<Row, CodecError> {
    let bytes = r.bytes;
    let count = r.varint()?;
    // Every value takes at least one byte: a count beyond the input is corrupt,
    // and refusing it here keeps a hostile count from reserving memory.
    if count > (bytes.len() - r.pos) as u64 {
        return Err(CodecError::BadLength { at: 1 });
    }
    let mut values = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let at = r.pos;
        let value = match r.byte("value tag")? {
            TAG_NULL => Value::Null,
            TAG_BOOL => match r.byte("bool")? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(CodecError::BadTag { tag: b, at: at + 1 }),
            },
            TAG_INT => {
                let z = r.varint()?;
                Value::Int(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            TAG_FLOAT => {
                let raw = r.take(8, "float")?;
                let mut b = [0u8; 8];
                b.copy_from_slice(raw);
                Value::Float(f64::from_bits(u64::from_le_bytes(b)))
            }
            TAG_TEXT => {
                let n = r.varint()?;
                let raw = r.take(n, "text")?;
                Value::Text(std::str::from_utf8(raw).map_err(|_| CodecError::BadUtf8 { at })?.to_owned())
            }
            TAG_BYTES => {
                let n = r.varint()?;
                Value::Bytes(r.take(n, "bytes")?.to_vec())
            }
            tag => return Err(CodecError::BadTag { tag, at }),
        };
        values.push(value);
    }
    if r.pos != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - r.pos));
    }
    Ok(Row(values))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            prop_oneof![Just(f64::NAN), Just(-0.0), Just(f64::INFINITY), Just(f64::NEG_INFINITY)]
                .prop_map(Value::Float),
            ".{0,12}".prop_map(Value::Text),
            proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0xFF), any::<u8>()], 0..12)
                .prop_map(Value::Bytes),
        ]
    }

    proptest! {
        #[test]
        fn key_encoding_round_trips_and_preserves_order(
            a in proptest::collection::vec(any_value(), 0..4),
            b in proptest::collection::vec(any_value(), 0..4),
        ) {
            let (a, b) = (Key(a), Key(b));
            let (ea, eb) = (encode_key(&a), encode_key(&b));
            prop_assert_eq!(decode_key(&ea).unwrap(), a.clone());
            prop_assert_eq!(ea.cmp(&eb), a.cmp(&b));
        }

        #[test]
        fn row_encoding_round_trips(values in proptest::collection::vec(any_value(), 0..8)) {
            let row = Row(values);
            prop_assert_eq!(decode_row(&encode_row(&row)).unwrap(), row);
        }

        #[test]
        fn stored_rows_round_trip(values in proptest::collection::vec(any_value(), 0..4), copies in 0u64..5) {
            let row = Row(values);
            prop_assert_eq!(decode_stored_row(&encode_stored_row(&row, copies)).unwrap(), (row, copies));
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_key(&bytes);
            let _ = decode_row(&bytes);
            let _ = decode_stored_row(&bytes);
        }
    }

    #[test]
    fn rejects_hostile_lengths() {
        assert!(decode_row(&[1, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]).is_err());
        assert!(decode_row(&[1, 1, TAG_TEXT, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).is_err());
        assert!(decode_row(&[9]).is_err());
        assert!(decode_key(&[TAG_TEXT, b'a', 0, 7]).is_err());
    }
}
