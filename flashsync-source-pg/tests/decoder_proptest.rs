//! The pgoutput decoder and the replication frame parser return errors —
//! never panic — on arbitrary and mutated bytes, and decode what a
//! conforming encoder produces.

use flashsync_core::Lsn;
use flashsync_source_pg::pgoutput::{
    decode, Begin, ColumnDesc, Commit, Delete, Insert, LogicalMessage, Message, OldTuple, Origin, Relation,
    ReplicaIdentity, Truncate, TupleData, TupleValue, TypeMsg, Update,
};
use flashsync_source_pg::replication::parse_copy_data;
use proptest::prelude::*;

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn tuple(out: &mut Vec<u8>, t: &TupleData) {
    out.extend_from_slice(&(t.0.len() as u16).to_be_bytes());
    for v in &t.0 {
        match v {
            TupleValue::Null => out.push(b'n'),
            TupleValue::UnchangedToast => out.push(b'u'),
            TupleValue::Text(b) | TupleValue::Binary(b) => {
                out.push(if matches!(v, TupleValue::Text(_)) { b't' } else { b'b' });
                out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }
}

/// What Postgres would send for `m` (protocol version 1).
fn encode(m: &Message) -> Vec<u8> {
    let mut o = Vec::new();
    match m {
        Message::Begin(b) => {
            o.push(b'B');
            o.extend_from_slice(&b.final_lsn.0.to_be_bytes());
            o.extend_from_slice(&b.commit_time.to_be_bytes());
            o.extend_from_slice(&b.xid.to_be_bytes());
        }
        Message::Commit(c) => {
            o.push(b'C');
            o.push(c.flags);
            o.extend_from_slice(&c.commit_lsn.0.to_be_bytes());
            o.extend_from_slice(&c.end_lsn.0.to_be_bytes());
            o.extend_from_slice(&c.commit_time.to_be_bytes());
        }
        Message::Origin(x) => {
            o.push(b'O');
            o.extend_from_slice(&x.commit_lsn.0.to_be_bytes());
            cstr(&mut o, &x.name);
        }
        Message::Relation(r) => {
            o.push(b'R');
            o.extend_from_slice(&r.oid.to_be_bytes());
            cstr(&mut o, &r.namespace);
            cstr(&mut o, &r.name);
            o.push(match r.replica_identity {
                ReplicaIdentity::Default => b'd',
                ReplicaIdentity::Nothing => b'n',
                ReplicaIdentity::Full => b'f',
                ReplicaIdentity::Index => b'i',
            });
            o.extend_from_slice(&(r.columns.len() as u16).to_be_bytes());
            for c in &r.columns {
                o.push(u8::from(c.key));
                cstr(&mut o, &c.name);
                o.extend_from_slice(&c.type_oid.to_be_bytes());
                o.extend_from_slice(&c.type_modifier.to_be_bytes());
            }
        }
        Message::Type(t) => {
            o.push(b'Y');
            o.extend_from_slice(&t.oid.to_be_bytes());
            cstr(&mut o, &t.namespace);
            cstr(&mut o, &t.name);
        }
        Message::Insert(i) => {
            o.push(b'I');
            o.extend_from_slice(&i.rel.to_be_bytes());
            o.push(b'N');
            tuple(&mut o, &i.new);
        }
        Message::Update(u) => {
            o.push(b'U');
            o.extend_from_slice(&u.rel.to_be_bytes());
            match &u.old {
                Some(OldTuple::Key(t)) => {
                    o.push(b'K');
                    tuple(&mut o, t);
                }
                Some(OldTuple::Full(t)) => {
                    o.push(b'O');
                    tuple(&mut o, t);
                }
                None => {}
            }
            o.push(b'N');
            tuple(&mut o, &u.new);
        }
        Message::Delete(d) => {
            o.push(b'D');
            o.extend_from_slice(&d.rel.to_be_bytes());
            let (tag, t) = match &d.old {
                OldTuple::Key(t) => (b'K', t),
                OldTuple::Full(t) => (b'O', t),
            };
            o.push(tag);
            tuple(&mut o, t);
        }
        Message::Truncate(t) => {
            o.push(b'T');
            o.extend_from_slice(&(t.rels.len() as u32).to_be_bytes());
            o.push(t.options);
            for r in &t.rels {
                o.extend_from_slice(&r.to_be_bytes());
            }
        }
        Message::Message(m) => {
            o.push(b'M');
            o.push(u8::from(m.transactional));
            o.extend_from_slice(&m.lsn.0.to_be_bytes());
            cstr(&mut o, &m.prefix);
            o.extend_from_slice(&(m.content.len() as u32).to_be_bytes());
            o.extend_from_slice(&m.content);
        }
    }
    o
}

fn name() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,12}"
}

fn tuple_data() -> impl Strategy<Value = TupleData> {
    proptest::collection::vec(
        prop_oneof![
            Just(TupleValue::Null),
            Just(TupleValue::UnchangedToast),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(TupleValue::Text),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(TupleValue::Binary),
        ],
        0..6,
    )
    .prop_map(TupleData)
}

fn old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![tuple_data().prop_map(OldTuple::Key), tuple_data().prop_map(OldTuple::Full)]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u64>(), any::<i64>(), any::<u32>()).prop_map(|(l, t, x)| Message::Begin(Begin {
            final_lsn: Lsn(l),
            commit_time: t,
            xid: x
        })),
        (any::<u8>(), any::<u64>(), any::<u64>(), any::<i64>()).prop_map(|(f, a, b, t)| Message::Commit(Commit {
            flags: f,
            commit_lsn: Lsn(a),
            end_lsn: Lsn(b),
            commit_time: t
        })),
        (any::<u64>(), name()).prop_map(|(l, n)| Message::Origin(Origin { commit_lsn: Lsn(l), name: n })),
        (
            any::<u32>(),
            name(),
            name(),
            prop_oneof![
                Just(ReplicaIdentity::Default),
                Just(ReplicaIdentity::Nothing),
                Just(ReplicaIdentity::Full),
                Just(ReplicaIdentity::Index)
            ],
            proptest::collection::vec(
                (any::<bool>(), name(), any::<u32>(), any::<i32>()).prop_map(|(key, name, type_oid, type_modifier)| {
                    ColumnDesc { key, name, type_oid, type_modifier }
                }),
                0..5
            )
        )
            .prop_map(|(oid, namespace, name, replica_identity, columns)| Message::Relation(Relation {
                oid,
                namespace,
                name,
                replica_identity,
                columns
            })),
        (any::<u32>(), name(), name()).prop_map(|(oid, namespace, name)| Message::Type(TypeMsg {
            oid,
            namespace,
            name
        })),
        (any::<u32>(), tuple_data()).prop_map(|(rel, new)| Message::Insert(Insert { rel, new })),
        (any::<u32>(), proptest::option::of(old_tuple()), tuple_data())
            .prop_map(|(rel, old, new)| Message::Update(Update { rel, old, new })),
        (any::<u32>(), old_tuple()).prop_map(|(rel, old)| Message::Delete(Delete { rel, old })),
        (any::<u8>(), proptest::collection::vec(any::<u32>(), 0..5))
            .prop_map(|(options, rels)| Message::Truncate(Truncate { options, rels })),
        (any::<bool>(), any::<u64>(), name(), proptest::collection::vec(any::<u8>(), 0..16)).prop_map(
            |(transactional, l, prefix, content)| Message::Message(LogicalMessage {
                transactional,
                lsn: Lsn(l),
                prefix,
                content
            })
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
        let _ = parse_copy_data(&bytes);
    }

    #[test]
    fn arbitrary_bodies_behind_every_tag_never_panic(tag in prop::sample::select(b"BCORYIUDTMSEcAbPKrpwkx".to_vec()), body in proptest::collection::vec(any::<u8>(), 0..128)) {
        let mut bytes = vec![tag];
        bytes.extend_from_slice(&body);
        let _ = decode(&bytes);
        let _ = parse_copy_data(&bytes);
    }

    #[test]
    fn encoded_messages_round_trip(m in message()) {
        prop_assert_eq!(decode(&encode(&m)), Ok(m));
    }

    #[test]
    fn mutated_messages_never_panic(m in message(), edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), cut in any::<prop::sample::Index>(), extra in proptest::collection::vec(any::<u8>(), 0..4)) {
        let mut bytes = encode(&m);
        for (at, b) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *b;
        }
        let _ = decode(&bytes);
        // Every truncation is an error, and so are trailing bytes.
        let short = &encode(&m)[..cut.index(encode(&m).len())];
        prop_assert!(decode(short).is_err());
        if !extra.is_empty() {
            let mut long = encode(&m);
            long.extend_from_slice(&extra);
            prop_assert!(decode(&long).is_err());
        }
    }

    #[test]
    fn huge_counts_are_refused_without_allocating(count in any::<u16>(), tag in prop::sample::select(vec![b'R', b'I', b'T'])) {
        // Headers announcing many columns/relations with no bytes behind them.
        let mut bytes = vec![tag];
        match tag {
            b'R' => { bytes.extend_from_slice(&1u32.to_be_bytes()); bytes.extend_from_slice(b"s\0t\0d"); bytes.extend_from_slice(&count.to_be_bytes()); }
            b'I' => { bytes.extend_from_slice(&1u32.to_be_bytes()); bytes.push(b'N'); bytes.extend_from_slice(&count.to_be_bytes()); }
            _ => { bytes.extend_from_slice(&u32::MAX.to_be_bytes()); bytes.push(0); }
        }
        prop_assert!(count == 0 || decode(&bytes).is_err());
    }
}
