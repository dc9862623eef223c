//! Typed rows: mirrored [`Row`](crate::Row)s as the application's own types.
//!
//! [`from_row`] reads a row into any `serde::Deserialize` type — a struct by
//! column name (`#[serde(rename)]`, `#[serde(default)]`, `Option` fields for
//! nullable or absent columns all work), a tuple by position — with a
//! hand-written deserializer: no JSON round trip, no panics, and errors
//! ([`TypedError`]) that name the column and its type but never print the
//! row's values. The `Value::to_*` methods convert one value exactly into a
//! well-known crate's type, each behind a cargo feature of this crate:
//! `decimal` (rust_decimal), `chrono`, `uuid`, `json` (serde_json), or all
//! four with `typed-all`. None is on by default; none reads a clock or a
//! time zone database.
//!
//! ```
//! use flashsync_core::{row, typed, Column, RelationSchema, SourceRelId};
//! use serde::Deserialize;
//!
//! #[derive(Debug, PartialEq, Deserialize)]
//! struct User {
//!     id: i64,
//!     email: String,
//!     score: Option<f64>,
//!     #[serde(rename = "created_at")]
//!     created: String,
//! }
//!
//! let col = |name: &str, type_name: &str| Column { name: name.into(), type_name: type_name.into() };
//! let schema = RelationSchema::keyed(
//!     SourceRelId(1),
//!     vec![col("id", "int8"), col("email", "text"), col("score", "float8"), col("created_at", "timestamptz"), col("bio", "text")],
//!     vec![0],
//! );
//! let row = row![7, "ada@example.com", None::<f64>, "2026-01-02 03:04:05.5+00", "not read"];
//!
//! let user: User = typed::from_row(&schema, &row)?;
//! assert_eq!(user.id, 7);
//! assert_eq!(user.score, None);
//! // A `String` field gets Postgres's text verbatim.
//! assert_eq!(user.created, "2026-01-02 03:04:05.5+00");
//!
//! // Tuples read by position.
//! let (id, email, ..): (i32, String, Option<f64>, String, String) = typed::from_row(&schema, &row)?;
//! assert_eq!((id, email.as_str()), (7, "ada@example.com"));
//! # Ok::<(), flashsync_core::TypedError>(())
//! ```
//!
//! With the features on, the crates' types work as fields too:
//!
//! ```
//! # #[cfg(all(feature = "chrono", feature = "decimal", feature = "uuid"))] {
//! use flashsync_core::{row, typed, Column, RelationSchema, SourceRelId, Value};
//!
//! #[derive(serde::Deserialize)]
//! struct Payment {
//!     id: uuid::Uuid,
//!     amount: rust_decimal::Decimal,
//!     at: chrono::DateTime<chrono::Utc>,
//! }
//!
//! let col = |name: &str, type_name: &str| Column { name: name.into(), type_name: type_name.into() };
//! let schema = RelationSchema::keyed(
//!     SourceRelId(1),
//!     vec![col("id", "uuid"), col("amount", "numeric"), col("at", "timestamptz")],
//!     vec![0],
//! );
//! let row = row!["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "12.50", "2026-01-02 03:04:05.123456+00"];
//! let p: Payment = typed::from_row(&schema, &row)?;
//! assert_eq!(p.amount.to_string(), "12.50");
//! assert_eq!(p.at.to_rfc3339(), "2026-01-02T03:04:05.123456+00:00");
//!
//! // One value at a time:
//! assert_eq!(Value::from("0044-03-15 BC").to_naive_date()?.to_string(), "-0043-03-15");
//! assert!(Value::from("NaN").to_decimal().is_err());
//! # }
//! # Ok::<(), flashsync_core::TypedError>(())
//! ```
//!
//! # Types
//!
//! The Postgres source keeps a few types native and every other one as its
//! canonical text output (`DateStyle=ISO`, `TimeZone=UTC`; see
//! [`Value`](crate::Value)):
//!
//! | Postgres type | [`Value`](crate::Value) | [`from_row`] field types | conversion (feature) |
//! |---|---|---|---|
//! | `bool` | `Bool` | `bool` | — |
//! | `int2`, `int4`, `int8`, `oid` | `Int` | `i64`; `i8`…`i32`, `u8`…`u64`, `i128`, `u128` when in range; `f64`, `f32` when exact | — |
//! | `float4`, `float8` | `Float` (NaN, ±∞, −0 kept) | `f64`; `f32` when exact | — |
//! | `bytea` | `Bytes` | `Vec<u8>`, `serde_bytes::ByteBuf`, `&[u8]` (borrowed) | — |
//! | `text`, `varchar`, `bpchar`, `name`, ... | `Text` | `String`, `&str` (borrowed), `char` | — |
//! | an enum type | `Text` (the label) | `String`; a Rust enum's unit variants | — |
//! | `numeric` | `Text`: `-12.340`, `NaN`, `Infinity` | `String`; `rust_decimal::Decimal` | `Value::to_decimal` (`decimal`) |
//! | `date` | `Text`: `2026-01-02`, `0044-03-15 BC`, `infinity` | `String`; `chrono::NaiveDate` | `Value::to_naive_date` (`chrono`) |
//! | `timestamp` | `Text`: `2026-01-02 03:04:05.123456` | `String`; `chrono::NaiveDateTime` | `Value::to_naive_datetime` (`chrono`) |
//! | `timestamptz` | `Text`: `2026-01-02 03:04:05.123456+00` | `String`; `chrono::DateTime<Utc>` (or `<FixedOffset>`) | `Value::to_datetime_utc` (`chrono`) |
//! | `uuid` | `Text`: lowercase, hyphenated | `String`; `uuid::Uuid` | `Value::to_uuid` (`uuid`) |
//! | `json`, `jsonb` | `Text`: the document | `String`; with `json`: `serde_json::Value` or any `Deserialize` type | `Value::to_json` (`json`) |
//! | `time`, `interval`, arrays (`_int4`), ranges, `inet`, ... | `Text` | `String` (arrays are not parsed); types whose serde impl reads that text | — |
//! | NULL, of any type | `Null` | `Option<T>` (`None`); any other field: an error | an error |
//!
//! # What a field receives
//!
//! Serde lets a type ask for a kind of value but not say which type it is,
//! so what a field gets depends on what its `Deserialize` impl asks for:
//!
//! - **`String`** (`deserialize_string`) always gets the verbatim Postgres
//!   text, on every column type and with any features.
//! - **`str`** (`deserialize_str`: chrono's types, `&str`, `Uuid`,
//!   `#[serde(borrow)] Cow<str>`) gets the verbatim text too — except on
//!   `date`, `timestamp` and `timestamptz` columns, where it gets the RFC
//!   3339 form chrono reads: `2026-01-02T03:04:05.123456+00:00`, years BC
//!   and beyond 9999 signed (`0044-03-15 BC` → `-0043-03-15`, astronomical
//!   year numbering), and an error for `infinity`, which has no such form.
//!   So a borrowed `&str` field cannot read a `timestamp` column (it is not
//!   in the row as such); use `String`.
//! - **anything** (`deserialize_any`: `rust_decimal::Decimal`,
//!   `serde_json::Value`, untagged enums, `#[serde(flatten)]`) gets the
//!   verbatim text — except that on `numeric` columns a finite value more
//!   precise than a `Decimal` (over 28 fractional digits or 96 bits of
//!   digits) is an error, because rust_decimal's parser would round it, and
//!   that `json`/`jsonb` columns give the parsed document (next point).
//!   Inside `flatten` and untagged enums chrono fields therefore see the
//!   verbatim text, which they do not read.
//! - **`json`/`jsonb` columns, with the `json` feature**: every target except
//!   string-like ones (`String`, `&str`, `char`, bytes) reads the parsed
//!   document, so a field can be a `serde_json::Value` or the app's own
//!   struct. SQL NULL is `None`; a JSON `null` document is `Some` (e.g.
//!   `Some(serde_json::Value::Null)`). Without the feature they are text.
//!   Integers past 64 bits in a document arrive as `f64` (serde_json's rule).
//!
//! Apart from `json`, these rules do not depend on this crate's features, so
//! turning one on elsewhere in a build never changes what a field receives;
//! `Decimal`, `DateTime` and `Uuid` fields work whenever those crates'
//! `serde` features are on (this crate's features turn them on).
//!
//! Integers and floats are never silently narrowed: an `int8` of 300 into a
//! `u8` field, or a `float8` of 0.1 into an `f32`, is a
//! [`TypedErrorKind::OutOfRange`] error. Text is never parsed into numbers
//! (a `numeric` into an `f64` field is an error: read it as `Decimal` or
//! `String`).

mod cell;
// `Value::to_*`: only the features add methods.
#[cfg(any(feature = "decimal", feature = "chrono", feature = "uuid", feature = "json"))]
mod convert;
mod de;
mod error;
#[cfg(feature = "json")]
mod json;
mod pgtext;

#[cfg(test)]
mod tests;

pub use de::{from_row, from_row_borrowed, RowDeserializer};
pub use error::{TypedError, TypedErrorKind};
