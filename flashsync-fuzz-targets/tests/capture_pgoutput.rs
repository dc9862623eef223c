//! Regenerates the `pgoutput_decode` seed corpus from a real Postgres:
//!
//! ```sh
//! cargo test -p flashsync-fuzz-targets --test capture_pgoutput -- --ignored
//! ```
//!
//! It starts a throwaway cluster (the `testkit` of `flashsync-source-pg`),
//! runs a workload touching every message type pgoutput protocol 1 sends
//! (relation, type, insert, update with and without an old key, unchanged
//! TOAST values, `REPLICA IDENTITY FULL`, delete, truncate, logical
//! messages), reads the raw messages with `pg_logical_slot_get_binary_changes`
//! and writes each to `fuzz/corpus/pgoutput_decode/pg-NNN-<tag>` (only two
//! each of the repetitive Begin and Commit); the first message of each kind
//! also goes in wrapped in a replication `XLogData` frame, and two keepalive
//! frames are added. (The `Origin` message, which needs a replication origin
//! set up, is the hand-made seed `hand-O`.)
//! Ignored by default: it rewrites committed files.

use std::path::Path;

use flashsync_source_pg::testkit;

const WORKLOAD: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE kv (id int8 PRIMARY KEY, name text, score float8, flag bool, data bytea, at timestamptz,
                 amount numeric, tags text[], doc jsonb, m mood, big text);
ALTER TABLE kv ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE full_row (a int4, b text);
ALTER TABLE full_row REPLICA IDENTITY FULL;
CREATE PUBLICATION fuzz_pub FOR TABLE kv, full_row;
SELECT pg_create_logical_replication_slot('fuzz_slot', 'pgoutput');
INSERT INTO kv VALUES (1, 'ada', 1.5, true, '\x00ff10', '2024-02-29 12:34:56.789+00', 'NaN', '{a,"b c",NULL}',
                       '{"k": [1, 2.5, null]}', 'happy', repeat('x', 5000));
INSERT INTO kv VALUES (2, NULL, '-Infinity', false, '', '-infinity', '-1.000000000000000000001', '{}', 'null', 'sad', 'short');
UPDATE kv SET name = 'ada lovelace', score = 'NaN' WHERE id = 1;
UPDATE kv SET id = 3 WHERE id = 2;
DELETE FROM kv WHERE id = 3;
INSERT INTO full_row VALUES (1, 'one'), (1, 'one'), (2, NULL);
UPDATE full_row SET b = 'uno' WHERE a = 1;
DELETE FROM full_row WHERE a = 2;
SELECT pg_logical_emit_message(true, 'fuzz', 'transactional message');
SELECT pg_logical_emit_message(false, 'fuzz', '\x00010203'::bytea);
TRUNCATE kv, full_row RESTART IDENTITY CASCADE;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "rewrites fuzz/corpus/pgoutput_decode; run by hand to regenerate the seeds"]
async fn capture_pgoutput_seeds() {
    let Some(db) = testkit::test_db("fuzz_capture").await else { return };
    let client = db.client().await;
    // One statement at a time: a multi-statement string is one transaction,
    // and a slot cannot be created in a transaction that wrote.
    for stmt in WORKLOAD.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        client.batch_execute(stmt).await.unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }
    let rows = client
        .query(
            "SELECT data FROM pg_logical_slot_get_binary_changes('fuzz_slot', NULL, NULL, \
             'proto_version', '1', 'publication_names', 'fuzz_pub', 'messages', 'true')",
            &[],
        )
        .await
        .expect("read slot");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/pgoutput_decode");
    std::fs::create_dir_all(&out).expect("corpus dir");
    for old in std::fs::read_dir(&out).expect("list corpus").flatten() {
        std::fs::remove_file(old.path()).expect("remove old seed");
    }
    let mut seen: Vec<char> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let data: Vec<u8> = row.get(0);
        let tag = char::from(data[0]);
        let count = seen.iter().filter(|t| **t == tag).count();
        seen.push(tag);
        // Begin and Commit look alike every time: two of each are enough.
        if "BC".contains(tag) && count >= 2 {
            continue;
        }
        std::fs::write(out.join(format!("pg-{i:03}-{tag}")), &data).expect("write seed");
        // The first message of each kind also goes in as a whole XLogData frame.
        if count == 0 {
            let mut frame = vec![b'w'];
            frame.extend_from_slice(&(0x0100_0000u64 + i as u64).to_be_bytes());
            frame.extend_from_slice(&0x0200_0000u64.to_be_bytes());
            frame.extend_from_slice(&789_000_000_000i64.to_be_bytes());
            frame.extend_from_slice(&data);
            std::fs::write(out.join(format!("frame-w-{i:03}-{tag}")), frame).expect("write frame");
        }
    }
    for (name, reply) in [("frame-k-noreply", 0u8), ("frame-k-reply", 1)] {
        let mut k = vec![b'k'];
        k.extend_from_slice(&0x0300_0000u64.to_be_bytes());
        k.extend_from_slice(&789_000_000_000i64.to_be_bytes());
        k.push(reply);
        std::fs::write(out.join(name), k).expect("write keepalive");
    }
    assert!(rows.len() > 20, "only {} messages captured", rows.len());
}
