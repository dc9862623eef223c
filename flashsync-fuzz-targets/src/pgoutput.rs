//! Target `pgoutput_decode`: everything that reads bytes a Postgres server
//! sends.
//!
//! One input is tried as each of:
//!
//! - a `pgoutput` message ([`flashsync_source_pg::pgoutput::decode`]): never
//!   panics; a decoded message re-encodes ([`encode_message`]) to bytes of
//!   the same length that decode to the same message;
//! - a replication `CopyData` frame
//!   ([`flashsync_source_pg::replication::parse_copy_data`]): never panics;
//!   an `XLogData` frame re-encodes to exactly the input, a keepalive to a
//!   frame that parses the same; the `XLogData` payload is then checked as a
//!   `pgoutput` message too;
//! - the text form of a value of every type the value mapping treats
//!   specially ([`flashsync_source_pg::values::text_to_value`]), including
//!   each text value inside a decoded message; `bytea` output of the input
//!   (hex and escape formats) decodes back to the input;
//! - `COPY` text ([`flashsync_source_pg::copy_text`]): never panics, and
//!   feeding it in two chunks gives the same rows and errors as in one.

use flashsync_source_pg::copy_text::{parse_line, CopyTextError, CopyTextParser, Field};
use flashsync_source_pg::pgoutput::{decode, Message, OldTuple, TupleData, TupleValue};
use flashsync_source_pg::replication::{parse_copy_data, ReplicationFrame};
use flashsync_source_pg::values::{decode_bytea, oid, text_to_value};

/// Type OIDs whose text form is parsed: the specially mapped ones plus a few
/// that map to text verbatim.
const TYPE_OIDS: [u32; 12] = [
    oid::BOOL,
    oid::BYTEA,
    oid::INT8,
    oid::INT2,
    oid::INT4,
    oid::OID,
    oid::FLOAT4,
    oid::FLOAT8,
    25,   // text
    1700, // numeric
    3802, // jsonb
    1184, // timestamptz
];

/// The `pgoutput_decode` target body (see the [module docs](self)).
pub fn pgoutput_decode(data: &[u8]) {
    check_message(data);
    match parse_copy_data(data) {
        Ok(frame) => {
            let again = encode_frame(&frame);
            match &frame {
                ReplicationFrame::XLogData { data: payload, .. } => {
                    assert_eq!(again, data, "XLogData frame does not re-encode to its input");
                    check_message(payload);
                }
                ReplicationFrame::Keepalive { .. } => {
                    let reparsed = parse_copy_data(&again);
                    assert_eq!(reparsed.as_ref(), Ok(&frame), "keepalive does not round-trip");
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    check_values(data);
    check_copy_text(data);
}

/// Decodes `data` as one `pgoutput` message and checks the round trip.
fn check_message(data: &[u8]) {
    let msg = match decode(data) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let bytes = encode_message(&msg);
    assert_eq!(bytes.len(), data.len(), "{msg:?} re-encodes to a different length");
    assert_eq!(bytes.first(), data.first(), "{msg:?} re-encodes with a different tag");
    assert_eq!(decode(&bytes).as_ref(), Ok(&msg), "re-encoded {msg:?} decodes differently");
    for tuple in tuples(&msg) {
        for v in &tuple.0 {
            if let TupleValue::Text(t) | TupleValue::Binary(t) = v {
                for type_oid in TYPE_OIDS {
                    let _ = text_to_value(type_oid, t);
                }
            }
        }
    }
}

fn tuples(msg: &Message) -> Vec<&TupleData> {
    match msg {
        Message::Insert(i) => vec![&i.new],
        Message::Update(u) => u.old.iter().map(OldTuple::tuple).chain([&u.new]).collect(),
        Message::Delete(d) => vec![d.old.tuple()],
        _ => Vec::new(),
    }
}

/// Value parsing: no panics, and `bytea` output of any bytes reads back.
fn check_values(data: &[u8]) {
    for type_oid in TYPE_OIDS {
        if let Err(e) = text_to_value(type_oid, data) {
            let _ = e.to_string();
        }
    }
    let _ = decode_bytea(data);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = Vec::with_capacity(2 + 2 * data.len());
    hex.extend_from_slice(b"\\x");
    for &b in data {
        hex.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
    }
    assert_eq!(decode_bytea(&hex).as_deref(), Some(data), "hex bytea does not read back");
    let mut escaped = Vec::new();
    for &b in data {
        match b {
            b'\\' => escaped.extend_from_slice(b"\\\\"),
            0x20..=0x7e => escaped.push(b),
            _ => escaped.extend_from_slice(&[b'\\', b'0' + (b >> 6), b'0' + ((b >> 3) & 7), b'0' + (b & 7)]),
        }
    }
    // A leading `\x` would make the escape form read as hex; Postgres writes
    // the backslash doubled, and so do we, so this cannot happen.
    assert_eq!(decode_bytea(&escaped).as_deref(), Some(data), "escape-format bytea does not read back");
}

type CopyOutcome = (Vec<Vec<Field>>, Result<(), CopyTextError>, Result<(), CopyTextError>);

fn copy_rows(chunks: &[&[u8]]) -> CopyOutcome {
    let mut parser = CopyTextParser::new();
    let mut rows = Vec::new();
    for chunk in chunks {
        let pushed = parser.push::<CopyTextError>(chunk, |r| {
            rows.push(r);
            Ok(())
        });
        if pushed.is_err() {
            return (rows, pushed, Ok(()));
        }
    }
    let finished = parser.finish();
    (rows, Ok(()), finished)
}

/// COPY text: line parsing never panics; chunking does not change the rows.
fn check_copy_text(data: &[u8]) {
    let _ = parse_line(data);
    let whole = copy_rows(&[data]);
    let cut = usize::from(data.first().copied().unwrap_or(0)) % (data.len() + 1);
    let (a, b) = data.split_at(cut);
    let split = copy_rows(&[a, b]);
    assert_eq!(whole, split, "COPY text parsed differently when split at byte {cut}");
}

/// Encodes a replication frame the way a walsender sends it.
pub fn encode_frame(frame: &ReplicationFrame<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    match frame {
        ReplicationFrame::XLogData { wal_start, wal_end, server_time, data } => {
            out.push(b'w');
            out.extend_from_slice(&wal_start.0.to_be_bytes());
            out.extend_from_slice(&wal_end.0.to_be_bytes());
            out.extend_from_slice(&server_time.to_be_bytes());
            out.extend_from_slice(data);
        }
        ReplicationFrame::Keepalive { wal_end, server_time, reply_requested } => {
            out.push(b'k');
            out.extend_from_slice(&wal_end.0.to_be_bytes());
            out.extend_from_slice(&server_time.to_be_bytes());
            out.push(u8::from(*reply_requested));
        }
    }
    out
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn tuple(out: &mut Vec<u8>, t: &TupleData) {
    // Decoded tuples have at most u16::MAX values.
    out.extend_from_slice(&u16::try_from(t.0.len()).unwrap_or(u16::MAX).to_be_bytes());
    for v in &t.0 {
        match v {
            TupleValue::Null => out.push(b'n'),
            TupleValue::UnchangedToast => out.push(b'u'),
            TupleValue::Text(d) | TupleValue::Binary(d) => {
                out.push(if matches!(v, TupleValue::Text(_)) { b't' } else { b'b' });
                out.extend_from_slice(&i32::try_from(d.len()).unwrap_or(i32::MAX).to_be_bytes());
                out.extend_from_slice(d);
            }
        }
    }
}

fn old_tuple(out: &mut Vec<u8>, old: &OldTuple) {
    match old {
        OldTuple::Key(t) => {
            out.push(b'K');
            tuple(out, t);
        }
        OldTuple::Full(t) => {
            out.push(b'O');
            tuple(out, t);
        }
    }
}

/// Encodes a `pgoutput` message (protocol version 1) as Postgres sends it.
/// Fields the decoder folds (a column's flag bits other than "key", a logical
/// message's flag bits other than "transactional") are written canonically.
pub fn encode_message(msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    match msg {
        Message::Begin(b) => {
            out.push(b'B');
            out.extend_from_slice(&b.final_lsn.0.to_be_bytes());
            out.extend_from_slice(&b.commit_time.to_be_bytes());
            out.extend_from_slice(&b.xid.to_be_bytes());
        }
        Message::Commit(c) => {
            out.push(b'C');
            out.push(c.flags);
            out.extend_from_slice(&c.commit_lsn.0.to_be_bytes());
            out.extend_from_slice(&c.end_lsn.0.to_be_bytes());
            out.extend_from_slice(&c.commit_time.to_be_bytes());
        }
        Message::Origin(o) => {
            out.push(b'O');
            out.extend_from_slice(&o.commit_lsn.0.to_be_bytes());
            cstr(&mut out, &o.name);
        }
        Message::Relation(r) => {
            out.push(b'R');
            out.extend_from_slice(&r.oid.to_be_bytes());
            cstr(&mut out, &r.namespace);
            cstr(&mut out, &r.name);
            out.push(match r.replica_identity {
                flashsync_source_pg::pgoutput::ReplicaIdentity::Default => b'd',
                flashsync_source_pg::pgoutput::ReplicaIdentity::Nothing => b'n',
                flashsync_source_pg::pgoutput::ReplicaIdentity::Full => b'f',
                flashsync_source_pg::pgoutput::ReplicaIdentity::Index => b'i',
            });
            out.extend_from_slice(&u16::try_from(r.columns.len()).unwrap_or(u16::MAX).to_be_bytes());
            for c in &r.columns {
                out.push(u8::from(c.key));
                cstr(&mut out, &c.name);
                out.extend_from_slice(&c.type_oid.to_be_bytes());
                out.extend_from_slice(&c.type_modifier.to_be_bytes());
            }
        }
        Message::Type(t) => {
            out.push(b'Y');
            out.extend_from_slice(&t.oid.to_be_bytes());
            cstr(&mut out, &t.namespace);
            cstr(&mut out, &t.name);
        }
        Message::Insert(i) => {
            out.push(b'I');
            out.extend_from_slice(&i.rel.to_be_bytes());
            out.push(b'N');
            tuple(&mut out, &i.new);
        }
        Message::Update(u) => {
            out.push(b'U');
            out.extend_from_slice(&u.rel.to_be_bytes());
            if let Some(old) = &u.old {
                old_tuple(&mut out, old);
            }
            out.push(b'N');
            tuple(&mut out, &u.new);
        }
        Message::Delete(d) => {
            out.push(b'D');
            out.extend_from_slice(&d.rel.to_be_bytes());
            old_tuple(&mut out, &d.old);
        }
        Message::Truncate(t) => {
            out.push(b'T');
            out.extend_from_slice(&u32::try_from(t.rels.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.push(t.options);
            for r in &t.rels {
                out.extend_from_slice(&r.to_be_bytes());
            }
        }
        Message::Message(m) => {
            out.push(b'M');
            out.push(u8::from(m.transactional));
            out.extend_from_slice(&m.lsn.0.to_be_bytes());
            cstr(&mut out, &m.prefix);
            out.extend_from_slice(&u32::try_from(m.content.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(&m.content);
        }
    }
    out
}
