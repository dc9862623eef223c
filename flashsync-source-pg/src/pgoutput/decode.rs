//! Bytes → [`Message`].

use flashsync_core::Lsn;

use super::cursor::Cursor;
use super::message::*;
use super::DecodeError;

/// Decodes one `pgoutput` message (protocol version 1).
///
/// Returns an error — never panics — for truncated, oversized, trailing or
/// otherwise malformed input, and for streaming/two-phase messages this
/// crate never asks for.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let (&tag, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    match tag {
        b'B' => begin(body),
        b'C' => commit(body),
        b'O' => origin(body),
        b'R' => relation(body),
        b'Y' => type_msg(body),
        b'I' => insert(body),
        b'U' => update(body),
        b'D' => delete(body),
        b'T' => truncate(body),
        b'M' => logical_message(body),
        b'S' | b'E' | b'c' | b'A' => Err(DecodeError::Unsupported {
            tag: char::from(tag),
            detail: "streamed in-progress transactions (protocol version 2+) are not requested",
        }),
        b'b' | b'P' | b'K' | b'r' | b'p' => Err(DecodeError::Unsupported {
            tag: char::from(tag),
            detail: "two-phase commit messages (protocol version 3+) are not requested",
        }),
        _ => Err(DecodeError::Unsupported { tag: char::from(tag), detail: "unknown message type" }),
    }
}

fn begin(body: &[u8]) -> Result<Message, DecodeError> {
    let mut c = Cursor::new(body, "Begin");
    let final_lsn = Lsn(c.u64("final LSN")?);
    let commit_time = c.i64("commit timestamp")?;
    let xid = c.u32("xid")?;
    c.finish()?;
    Ok(Message::Begin(Begin { final_lsn, commit_time, xid }))
}

fn commit(body: &[u8]) -> Result<Message, DecodeError> {
    let mut c = Cursor::new(body, "Commit");
    let flags = c.u8("flags")?;
    let commit_lsn = Lsn(c.u64("commit LSN")?);
    let end_lsn = Lsn(c.u64("end LSN")?);
    let commit_time = c.i64("commit timestamp")?;
    c.finish()?;
    Ok(Message::Commit(Commit { flags, commit_lsn, end_lsn, commit_time }))
}

fn origin(body: &[u8]) -> Result<Message, DecodeError> {
    let mut c = Cursor::new(body, "Origin");
    let commit_lsn = Lsn(c.u64("commit LSN")?);
    let name = c.cstr("origin name")?;
    c.finish()?;
    Ok(Message::Origin(Origin { commit_lsn, name }))
}

fn relation(body: &[u8]) -> Result<Message, DecodeError> {
    const M: &str = "Relation";
    let mut c = Cursor::new(body, M);
    let oid = c.u32("relation OID")?;
    let namespace = c.cstr("namespace")?;
    let name = c.cstr("relation name")?;
    let ident = c.u8("replica identity")?;
    let replica_identity = ReplicaIdentity::from_byte(ident).ok_or_else(|| DecodeError::Invalid {
        message: M,
        field: "replica identity",
        detail: format!("unknown setting {:?}", char::from(ident)),
    })?;
    let n = usize::from(c.u16("column count")?);
    // Each column takes at least 10 bytes; refuse counts the input cannot
    // hold before allocating for them.
    if n > c.remaining() / 10 {
        return Err(DecodeError::Truncated { message: M, field: "columns" });
    }
    let mut columns = Vec::with_capacity(n);
    for _ in 0..n {
        let flags = c.u8("column flags")?;
        let name = c.cstr("column name")?;
        let type_oid = c.u32("column type OID")?;
        let type_modifier = c.i32("column type modifier")?;
        columns.push(ColumnDesc { key: flags & 1 == 1, name, type_oid, type_modifier });
    }
    c.finish()?;
    Ok(Message::Relation(Relation { oid, namespace, name, replica_identity, columns }))
}

fn type_msg(body: &[u8]) -> Result<Message, DecodeError> {
    let mut c = Cursor::new(body, "Type");
    let oid = c.u32("type OID")?;
    let namespace = c.cstr("namespace")?;
    let name = c.cstr("type name")?;
    c.finish()?;
    Ok(Message::Type(TypeMsg { oid, namespace, name }))
}

fn tuple(c: &mut Cursor<'_>, message: &'static str) -> Result<TupleData, DecodeError> {
    let n = usize::from(c.u16("tuple column count")?);
    // Every column takes at least its kind byte.
    if n > c.remaining() {
        return Err(DecodeError::Truncated { message, field: "tuple columns" });
    }
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = c.u8("tuple value kind")?;
        let value = match kind {
            b'n' => TupleValue::Null,
            b'u' => TupleValue::UnchangedToast,
            b't' | b'b' => {
                let len = c.i32("tuple value length")?;
                let len = usize::try_from(len).map_err(|_| DecodeError::Invalid {
                    message,
                    field: "tuple value length",
                    detail: format!("negative length {len}"),
                })?;
                let data = c.take(len, "tuple value")?.to_vec();
                if kind == b't' {
                    TupleValue::Text(data)
                } else {
                    TupleValue::Binary(data)
                }
            }
            other => {
                return Err(DecodeError::Invalid {
                    message,
                    field: "tuple value kind",
                    detail: format!("unknown kind {:?}", char::from(other)),
                })
            }
        };
        values.push(value);
    }
    Ok(TupleData(values))
}

fn insert(body: &[u8]) -> Result<Message, DecodeError> {
    const M: &str = "Insert";
    let mut c = Cursor::new(body, M);
    let rel = c.u32("relation OID")?;
    expect(&mut c, M, b'N', "new tuple marker")?;
    let new = tuple(&mut c, M)?;
    c.finish()?;
    Ok(Message::Insert(Insert { rel, new }))
}

fn update(body: &[u8]) -> Result<Message, DecodeError> {
    const M: &str = "Update";
    let mut c = Cursor::new(body, M);
    let rel = c.u32("relation OID")?;
    let marker = c.u8("tuple marker")?;
    let (old, marker) = match marker {
        b'K' | b'O' => {
            let t = tuple(&mut c, M)?;
            let old = if marker == b'K' { OldTuple::Key(t) } else { OldTuple::Full(t) };
            (Some(old), c.u8("new tuple marker")?)
        }
        m => (None, m),
    };
    if marker != b'N' {
        return Err(DecodeError::Invalid {
            message: M,
            field: "new tuple marker",
            detail: format!("expected 'N', found {:?}", char::from(marker)),
        });
    }
    let new = tuple(&mut c, M)?;
    c.finish()?;
    Ok(Message::Update(Update { rel, old, new }))
}

fn delete(body: &[u8]) -> Result<Message, DecodeError> {
    const M: &str = "Delete";
    let mut c = Cursor::new(body, M);
    let rel = c.u32("relation OID")?;
    let marker = c.u8("old tuple marker")?;
    let t = tuple(&mut c, M)?;
    let old = match marker {
        b'K' => OldTuple::Key(t),
        b'O' => OldTuple::Full(t),
        m => {
            return Err(DecodeError::Invalid {
                message: M,
                field: "old tuple marker",
                detail: format!("expected 'K' or 'O', found {:?}", char::from(m)),
            })
        }
    };
    c.finish()?;
    Ok(Message::Delete(Delete { rel, old }))
}

fn truncate(body: &[u8]) -> Result<Message, DecodeError> {
    const M: &str = "Truncate";
    let mut c = Cursor::new(body, M);
    let n = c.u32("relation count")?;
    let options = c.u8("options")?;
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    if n > c.remaining() / 4 {
        return Err(DecodeError::Truncated { message: M, field: "relation OIDs" });
    }
    let mut rels = Vec::with_capacity(n);
    for _ in 0..n {
        rels.push(c.u32("relation OID")?);
    }
    c.finish()?;
    Ok(Message::Truncate(Truncate { options, rels }))
}

fn logical_message(body: &[u8]) -> Result<Message, DecodeError> {
    const M: &str = "Message";
    let mut c = Cursor::new(body, M);
    let flags = c.u8("flags")?;
    let lsn = Lsn(c.u64("LSN")?);
    let prefix = c.cstr("prefix")?;
    let len = c.u32("content length")?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let content = c.take(len, "content")?.to_vec();
    c.finish()?;
    Ok(Message::Message(LogicalMessage { transactional: flags & 1 == 1, lsn, prefix, content }))
}

fn expect(c: &mut Cursor<'_>, message: &'static str, want: u8, field: &'static str) -> Result<(), DecodeError> {
    let got = c.u8(field)?;
    if got == want {
        Ok(())
    } else {
        Err(DecodeError::Invalid {
            message,
            field,
            detail: format!("expected {:?}, found {:?}", char::from(want), char::from(got)),
        })
    }
}
