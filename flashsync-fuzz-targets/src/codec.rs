//! Target `row_codec`: the byte encodings every store shares
//! ([`flashsync_core::codec`]).
//!
//! - Keys: for arbitrary keys `a` and `b`, `encode_key(a)` and
//!   `encode_key(b)` compare bytewise exactly as `a` and `b` compare; a key
//!   decodes back to itself; and bytes that decode as a key are the one
//!   encoding of that key (stores use the bytes as the row's identity).
//! - Equal values hash equally (keys live in hash maps inside batches).
//! - Rows and stored rows (with a copy count) round-trip; a stored row made
//!   from a row's bytes (`restore_copies`) equals one made from the row.
//! - A row pushed value by value into an `EncodedRowsBuilder`, keyed by any
//!   of its columns, yields exactly `encode_row` and `encode_key(key_of)`.
//! - Decoding arbitrary bytes as a key, a row or a stored row never panics,
//!   and a row decoded from arbitrary bytes re-encodes to bytes that decode
//!   to the same row.

use std::cmp::Ordering;
use std::hash::{DefaultHasher, Hash, Hasher};

use arbitrary::{Arbitrary, Unstructured};
use flashsync_core::codec::{
    decode_key, decode_row, decode_stored_row, encode_key, encode_row, encode_stored_row, restore_copies,
};
use flashsync_core::{Column, EncodedRowsBuilder, Key, RelationSchema, Row, SourceRelId, Value};

/// The `row_codec` target body (see the [module docs](self)).
pub fn row_codec(data: &[u8]) {
    // The raw input as stored bytes first.
    check_raw(data);

    let mut u = Unstructured::new(data);
    let Ok(input) = Input::arbitrary(&mut u) else { return };
    let a = Key(input.a.into_iter().map(Value::from).collect());
    let b = Key(input.b.into_iter().map(Value::from).collect());
    let (ea, eb) = (encode_key(&a), encode_key(&b));
    assert_eq!(decode_key(&ea).as_ref(), Ok(&a), "key does not round-trip");
    assert_eq!(ea.cmp(&eb), a.cmp(&b), "key order differs from encoded order: {a:?} vs {b:?}");
    if a == b {
        assert_eq!(hash(&a), hash(&b), "equal keys hash differently: {a:?} vs {b:?}");
    }
    // A key and a proper prefix of it (composite keys never straddle).
    if !a.0.is_empty() {
        let prefix = Key(a.0[..a.0.len() - 1].to_vec());
        assert_eq!(encode_key(&prefix).cmp(&ea), Ordering::Less, "prefix {prefix:?} of {a:?} does not sort first");
    }

    let row = Row(input.row.into_iter().map(Value::from).collect());
    assert_eq!(decode_row(&encode_row(&row)).as_ref(), Ok(&row), "row does not round-trip");
    let stored = encode_stored_row(&row, input.copies);
    assert_eq!(decode_stored_row(&stored), Ok((row.clone(), input.copies)), "stored row does not round-trip");
    assert_eq!(decode_row(&stored).as_ref(), Ok(&row), "stored row does not decode as a row");
    if input.copies == 1 {
        assert_eq!(stored, encode_row(&row), "one copy is not stored as a plain row");
    }
    assert_eq!(restore_copies(&encode_row(&row), input.copies).as_ref(), Ok(&stored), "restore_copies differs");
    check_encoded(&row, &input.key);
    check_raw(&input.raw);
}

/// One value, generated with its edge cases reachable.
#[derive(Arbitrary, Debug)]
enum FuzzValue {
    Null,
    Bool(bool),
    Int(i64),
    /// Any bit pattern: every NaN payload, both zeros, subnormals.
    Float(u64),
    Text(String),
    Bytes(Vec<u8>),
    /// Bytes full of the escape byte and its escapes.
    Zeros(Vec<ZeroByte>),
}

/// A byte drawn from the values the key escaping treats specially.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum ZeroByte {
    Zero,
    One,
    Ff,
    Other(u8),
}

impl From<FuzzValue> for Value {
    fn from(v: FuzzValue) -> Value {
        match v {
            FuzzValue::Null => Value::Null,
            FuzzValue::Bool(b) => Value::Bool(b),
            FuzzValue::Int(i) => Value::Int(i),
            FuzzValue::Float(bits) => Value::Float(f64::from_bits(bits)),
            FuzzValue::Text(s) => Value::Text(s),
            FuzzValue::Bytes(b) => Value::Bytes(b),
            FuzzValue::Zeros(z) => Value::Bytes(
                z.into_iter()
                    .map(|b| match b {
                        ZeroByte::Zero => 0,
                        ZeroByte::One => 1,
                        ZeroByte::Ff => 0xFF,
                        ZeroByte::Other(b) => b,
                    })
                    .collect(),
            ),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    a: Vec<FuzzValue>,
    b: Vec<FuzzValue>,
    row: Vec<FuzzValue>,
    copies: u64,
    /// Key columns for the encoded-rows check (taken modulo the width).
    key: Vec<u8>,
    raw: Vec<u8>,
}

/// The encoded-rows builder agrees with the value encoders.
fn check_encoded(row: &Row, key: &[u8]) {
    let width = row.0.len();
    if width == 0 || key.is_empty() {
        return;
    }
    let columns = (0..width).map(|i| Column { name: format!("c{i}"), type_name: "text".into() }).collect();
    let key: Vec<usize> = key.iter().map(|&k| usize::from(k) % width).collect();
    let schema = RelationSchema::keyed(SourceRelId(1), columns, key);
    let mut builder = EncodedRowsBuilder::new(&schema);
    for v in &row.0 {
        builder.push(v.as_value_ref());
    }
    assert_eq!(builder.finish_row(), Ok(()), "a row of the schema's width was refused");
    let batch = builder.take();
    let Some((k, r)) = batch.iter().next() else { panic!("the finished row is missing") };
    let want_key = schema.key_of(row).map(|key| encode_key(&key));
    assert_eq!(Ok(k.to_vec()), want_key, "encoded key differs");
    assert_eq!(r.to_vec(), encode_row(row), "encoded row differs");
}

fn hash(k: &Key) -> u64 {
    let mut h = DefaultHasher::new();
    k.hash(&mut h);
    h.finish()
}

/// Decoders on arbitrary bytes: errors, never panics; keys are canonical;
/// rows re-encode to an equivalent encoding.
fn check_raw(bytes: &[u8]) {
    match decode_key(bytes) {
        Ok(k) => assert_eq!(encode_key(&k), bytes, "bytes decode to {k:?}, whose encoding differs"),
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match decode_row(bytes) {
        Ok(r) => assert_eq!(decode_row(&encode_row(&r)).as_ref(), Ok(&r), "decoded row does not round-trip"),
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Ok((r, n)) = decode_stored_row(bytes) {
        assert_eq!(decode_stored_row(&encode_stored_row(&r, n)), Ok((r, n)), "decoded stored row does not round-trip");
    }
}
