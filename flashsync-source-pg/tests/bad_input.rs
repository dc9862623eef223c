//! Bad input through the public API of the Postgres source: connection
//! strings that are invalid or hostile, names the source refuses, and
//! servers that are not there, close at once, answer garbage or say nothing
//! — typed errors, in bounded time, never a panic, never the password in a
//! message. With a real (throwaway) Postgres: relations that do not exist or
//! vanish between `prepare` and `snapshot`.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use flashsync_core::{
    Column, OriginId, RelationSchema, Row, RowSink, Source, SourceError, SourceErrorKind, SourceRelId, StoreError,
    UpstreamRelation,
};
use flashsync_source_pg::{testkit, ConnInfo, ConnInfoError, PgSource, PgSourceConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const SECRET: &str = "hunter2-s3cret";

/// How long any failing call here may take (connect timeouts are 1 s).
const BOUND: Duration = Duration::from_secs(15);

/// Whether an error is of the expected kind.
type Expect = fn(&ConnInfoError) -> bool;

#[test]
fn invalid_connection_strings_are_typed_errors_without_secrets() {
    use ConnInfoError::*;
    let cases: Vec<(String, Expect)> = vec![
        (format!("host=h password={SECRET} sslmode=bogus"), |e| matches!(e, InvalidValue { .. })),
        (format!("host=h password='{SECRET}"), |e| matches!(e, Syntax(_))),
        (format!("host=h password={SECRET}\\"), |e| matches!(e, Syntax(_))),
        (format!("password={SECRET} nosuchkey=1"), |e| matches!(e, UnknownKey(_))),
        (format!("host=h {SECRET}"), |e| matches!(e, Syntax(_))),
        (format!("postgres://u:{SECRET}@h:notaport/db"), |e| matches!(e, InvalidValue { .. })),
        (format!("postgres://u:{SECRET}%zz@h/db"), |e| matches!(e, InvalidValue { .. })),
        (format!("postgres://u:{SECRET}%C3@h/db"), |e| matches!(e, InvalidValue { .. })),
        (format!("postgres://u:{SECRET}@[::1/db"), |e| matches!(e, Syntax(_))),
        (format!("postgres://u:{SECRET}@[::1]x/db"), |e| matches!(e, Syntax(_))),
        (format!("postgres://u:{SECRET}@h/db?sslmode"), |e| matches!(e, Syntax(_))),
        (format!("postgres://u:{SECRET}@h/db?bogus=1"), |e| matches!(e, UnknownKey(_))),
        (format!("postgres://u:{SECRET}@h:0/db"), |e| matches!(e, InvalidValue { .. })),
        (format!("postgres://u:{SECRET}@h:65536/db"), |e| matches!(e, InvalidValue { .. })),
        (format!("postgres://u:{SECRET}@h:-1/db"), |e| matches!(e, InvalidValue { .. })),
        (format!("host=a,b password={SECRET}"), |e| matches!(e, InvalidValue { .. })),
        (format!("port=99999 password={SECRET}"), |e| matches!(e, InvalidValue { .. })),
        (format!("connect_timeout=-1 password={SECRET}"), |e| matches!(e, InvalidValue { .. })),
        (format!("connect_timeout=1.5 password={SECRET}"), |e| matches!(e, InvalidValue { .. })),
        (format!("client_encoding=LATIN1 password={SECRET}"), |e| matches!(e, InvalidValue { .. })),
        ("=value".into(), |e| matches!(e, UnknownKey(_))),
        ("key".into(), |e| matches!(e, Syntax(_))),
        ("hōst=h".into(), |e| matches!(e, UnknownKey(_))),
    ];
    for (text, expected) in cases {
        let err = match text.parse::<ConnInfo>() {
            Ok(c) => panic!("{text:?} parsed as {c}"),
            Err(e) => e,
        };
        assert!(expected(&err), "{text:?} gave {err:?}");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(SECRET), "{text:?}: the error shows the password: {shown}");
    }
}

#[test]
fn hostile_connection_strings_never_panic() {
    // Deterministic junk from every class of character the parsers treat
    // specially, plus some very long strings.
    let alphabet: Vec<char> = "=' \\%@:/?&[],#\"\t\n\0abcXYZ09-_.é€😀postgres://host=port=".chars().collect();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let len = (next() % 48) as usize;
        let mut s: String = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
        if next() % 3 == 0 {
            s.insert_str(0, "postgres://");
        }
        if let Ok(c) = s.parse::<ConnInfo>() {
            let _ = format!("{c} {c:?}");
        }
    }
    for long in ["x".repeat(1 << 20), format!("postgres://{}", "%41".repeat(100_000)), "host=h ".repeat(50_000)] {
        let _ = long.parse::<ConnInfo>();
    }
}

fn config_for(conn: ConnInfo) -> PgSourceConfig {
    PgSourceConfig::new(&OriginId::new("pg:bad-input").expect("origin"), conn)
}

#[test]
fn unusable_names_are_refused_up_front() {
    let conn: ConnInfo = "host=127.0.0.1 port=1 user=u dbname=d".parse().expect("conninfo");
    for slot in ["", "UPPER", "with-dash", "spa ce", "qu\"ote", &"s".repeat(64), "é"] {
        let cfg = config_for(conn.clone()).with_feed_name(slot);
        match PgSource::new(cfg) {
            Ok(_) => panic!("slot name {slot:?} accepted"),
            Err(e) => assert_eq!(e.kind, SourceErrorKind::Refused, "{slot:?}: {e:?}"),
        }
    }
    for publication in [String::new(), "p".repeat(64)] {
        let mut cfg = config_for(conn.clone());
        cfg.publication_name = publication.clone();
        assert!(PgSource::new(cfg).is_err(), "publication name {publication:?} accepted");
    }
}

/// A sink that must never be written to.
struct NoRows;

#[async_trait]
impl RowSink for NoRows {
    async fn write(&mut self, rows: Vec<Row>) -> Result<(), StoreError> {
        panic!("{} rows from a server that is not there", rows.len());
    }
}

fn schema() -> RelationSchema {
    RelationSchema::keyed(SourceRelId(1), vec![Column { name: "id".into(), type_name: "int8".into() }], vec![0])
}

/// Runs every `Source` call against `conn`; each must fail, typed, within
/// [`BOUND`], without showing the password.
async fn every_call_fails(conn: ConnInfo, what: &str) -> Vec<SourceError> {
    let source = PgSource::new(config_for(conn)).expect("valid config");
    let rel = UpstreamRelation::new("public", "t").expect("relation");
    let mut errors = Vec::new();
    macro_rules! call {
        ($name:literal, $e:expr) => {{
            let started = Instant::now();
            let r = tokio::time::timeout(BOUND, $e)
                .await
                .unwrap_or_else(|_| panic!("{what}: {} hung for {BOUND:?}", $name));
            let e = match r {
                Ok(_) => panic!("{what}: {} succeeded", $name),
                Err(e) => e,
            };
            assert!(!format!("{e} {e:?}").contains(SECRET), "{what}: {} shows the password: {e}", $name);
            assert!(!e.message.is_empty(), "{what}: {} failed without a message", $name);
            eprintln!("{what}: {} → {:?} after {:?}: {}", $name, e.kind, started.elapsed(), e.message);
            errors.push(e);
        }};
    }
    call!("prepare", source.prepare(&rel, true));
    call!("snapshot", source.snapshot(&rel, &flashsync_core::ViewShape::whole(schema()), &mut NoRows));
    call!("subscribe", source.subscribe(None));
    call!("release", source.release(&rel));
    call!("drop_feed", source.drop_feed());
    errors
}

fn conn(port: u16, extra: &str) -> ConnInfo {
    format!("host=127.0.0.1 port={port} user=app password={SECRET} dbname=db connect_timeout=1 {extra}")
        .parse()
        .expect("conninfo")
}

/// A local port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    port
}

#[tokio::test]
async fn a_closed_port_is_a_prompt_connection_error() {
    let port = closed_port();
    for sslmode in ["disable", "prefer", "require", "verify-full"] {
        let errors =
            every_call_fails(conn(port, &format!("sslmode={sslmode}")), &format!("closed port, {sslmode}")).await;
        // verify-full without a CA file is refused before connecting.
        let expected = if sslmode == "verify-full" { SourceErrorKind::Refused } else { SourceErrorKind::Connection };
        for e in errors {
            assert_eq!(e.kind, expected, "{e:?}");
        }
    }
    // The longest connect timeout there is changes nothing when the port
    // refuses at once (and overflows nothing).
    let huge = conn(port, &format!("connect_timeout={}", u64::MAX));
    let errors = every_call_fails(huge, "closed port, huge timeout").await;
    assert!(errors.iter().all(|e| e.kind == SourceErrorKind::Connection));
    // A Unix socket directory that does not exist.
    let unix: ConnInfo = format!("host=/nonexistent/flashsync port=5432 user=app password={SECRET} dbname=db")
        .parse()
        .expect("conninfo");
    let errors = every_call_fails(unix, "missing unix socket").await;
    assert!(errors.iter().all(|e| e.kind == SourceErrorKind::Connection));
}

/// Serves `reply` to every connection, then closes it.
async fn server(reply: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = sock.write_all(reply).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_server_that_hangs_up_or_speaks_garbage_is_a_prompt_error() {
    let hang_up = server(b"").await;
    every_call_fails(conn(hang_up, "sslmode=disable"), "hang-up server").await;
    every_call_fails(conn(hang_up, "sslmode=prefer"), "hang-up server, prefer").await;
    let http = server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
    every_call_fails(conn(http, "sslmode=disable"), "HTTP server").await;
    every_call_fails(conn(http, "sslmode=require"), "HTTP server, require").await;
    // A Postgres error packet, as a server that refuses everyone sends.
    let refuse = server(b"E\0\0\0\x1eSFATAL\0C28000\0Mno access\0\0").await;
    every_call_fails(conn(refuse, "sslmode=disable"), "refusing server").await;
}

/// Known bug (flashsync-source-pg `control.rs` `connect`): tokio-postgres
/// applies `connect_timeout` to the TCP connect only, not to the startup,
/// TLS and authentication exchange after it, and `connect` adds no timeout
/// of its own (the replication transport does: `WireConn::connect` wraps
/// the whole handshake in `tokio::time::timeout`). A server that accepts the
/// connection and then says nothing — a hung Postgres, a proxy or firewall
/// that swallows traffic, the wrong service on the port — makes `prepare`,
/// `snapshot`, `subscribe`, `release` and `drop_feed` wait forever, and with
/// them the engine's sync pass. Fix: wrap `cfg.connect(..)` and the session
/// `batch_execute` in `tokio::time::timeout(info.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT), ..)`
/// and map the elapsed case to `SourceError::connection("…: timed out after …")`.
#[tokio::test]
async fn a_silent_server_is_a_bounded_connection_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock); // accept, then never say a word
        }
    });
    let errors = every_call_fails(conn(port, "sslmode=disable"), "silent server").await;
    assert!(errors.iter().all(|e| e.kind == SourceErrorKind::Connection));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relations_that_do_not_exist_or_vanish_are_relation_missing() {
    let Some(db) = testkit::test_db("bad_input_vanish").await else { return };
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE doomed (id int8 PRIMARY KEY, v text);
             INSERT INTO doomed SELECT g, 'row ' || g FROM generate_series(1, 100) g;",
        )
        .await
        .expect("setup");
    let source = PgSource::new(config_for(db.conninfo.clone())).expect("source");

    // Names that exist nowhere, including ones that would break unquoted SQL.
    for (ns, table) in [("public", "nope"), ("nope", "doomed"), ("public", "x\"; DROP TABLE doomed; --"), ("ö", "'")] {
        let rel = UpstreamRelation::new(ns, table).expect("relation");
        for feed in [false, true] {
            let r = bounded("prepare", source.prepare(&rel, feed)).await;
            let e = r.expect_err("prepare of a missing relation");
            assert_eq!(e.kind, SourceErrorKind::RelationMissing, "{rel}: {e:?}");
        }
        let r =
            bounded("snapshot", source.snapshot(&rel, &flashsync_core::ViewShape::whole(schema()), &mut NoRows)).await;
        assert_eq!(r.expect_err("snapshot of a missing relation").kind, SourceErrorKind::RelationMissing);
    }

    // Described (and added to the feed), then dropped before the snapshot.
    let rel = UpstreamRelation::new("public", "doomed").expect("relation");
    let described = source.prepare(&rel, true).await.expect("prepare");
    client.batch_execute("DROP TABLE doomed").await.expect("drop");
    let mut sink = Rows(Vec::new());
    let r = bounded("snapshot", source.snapshot(&rel, &flashsync_core::ViewShape::whole(described.clone()), &mut sink))
        .await;
    let e = r.expect_err("snapshot of a dropped relation");
    assert_eq!(e.kind, SourceErrorKind::RelationMissing, "{e:?}");
    assert!(sink.0.is_empty(), "rows of a dropped table were copied");
    // Re-created under the same name with another shape: a new relation,
    // which the old description does not fit.
    client.batch_execute("CREATE TABLE doomed (other text)").await.expect("recreate");
    let r = bounded("snapshot", source.snapshot(&rel, &flashsync_core::ViewShape::whole(described.clone()), &mut sink))
        .await;
    assert!(r.is_err(), "a snapshot with a stale description succeeded: {r:?}");
    // Releasing and dropping the feed of a relation that is gone still work.
    client.batch_execute("DROP TABLE doomed").await.expect("drop again");
    let r = bounded("release", source.release(&rel)).await;
    assert!(r.is_ok() || r.as_ref().is_err_and(|e| e.kind == SourceErrorKind::RelationMissing), "{r:?}");
    let r = bounded("drop_feed", source.drop_feed()).await;
    r.expect("drop_feed after the relation is gone");
}

/// Awaits `f`, failing the test if it takes longer than [`BOUND`].
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f).await.unwrap_or_else(|_| panic!("{what} hung for {BOUND:?}"))
}

/// Collects rows.
struct Rows(Vec<Row>);

#[async_trait]
impl RowSink for Rows {
    async fn write(&mut self, rows: Vec<Row>) -> Result<(), StoreError> {
        self.0.extend(rows);
        Ok(())
    }
}
