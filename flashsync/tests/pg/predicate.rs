//! Row filters against the real server: for thousands of generated
//! (filter, row) pairs, flashsync's evaluation of a bound filter must give
//! exactly the verdict Postgres gives the filter's SQL (and the user's own
//! text) on that row. Rows are read back as the source reads them: the text
//! output of each column (simple query protocol, pinned session settings)
//! mapped by `flashsync_source_pg::values::text_to_value`, the one mapping
//! both the snapshot and the stream use.

use flashsync::Value;
use flashsync_core::{Column, Predicate, PredicateError};
use flashsync_source_pg::testkit;
use flashsync_source_pg::values::text_to_value;
use tokio_postgres::{Client, SimpleQueryMessage};

mod generate;

use generate::{condition, Rng, COLUMNS, ROWS};

/// The verdicts of `exprs` (SQL boolean expressions) on every row, by id.
async fn verdicts(client: &Client, exprs: &[&str]) -> Result<Vec<Vec<Option<bool>>>, String> {
    let select = exprs.iter().map(|e| format!("({e})")).collect::<Vec<_>>().join(", ");
    let msgs = client
        .simple_query(&format!("SELECT id, {select} FROM t ORDER BY id"))
        .await
        .map_err(|e| e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().to_owned()))?;
    let mut out = Vec::new();
    for m in msgs {
        if let SimpleQueryMessage::Row(row) = m {
            let v = (1..=exprs.len())
                .map(|i| match row.get(i) {
                    None => None,
                    Some("t") => Some(true),
                    Some("f") => Some(false),
                    Some(other) => panic!("not a boolean: {other:?}"),
                })
                .collect();
            out.push(v);
        }
    }
    Ok(out)
}

/// The table's rows as the source reads them (id first, then `COLUMNS`).
async fn rows(client: &Client) -> Vec<Vec<Value>> {
    let names: Vec<&str> = COLUMNS.iter().map(|c| c.0).collect();
    let msgs = client.simple_query(&format!("SELECT id, {} FROM t ORDER BY id", names.join(", "))).await.unwrap();
    let oids: Vec<u32> = std::iter::once(23).chain(COLUMNS.iter().map(|c| c.3)).collect();
    msgs.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                oids.iter()
                    .enumerate()
                    .map(|(i, &oid)| match row.get(i) {
                        None => Value::Null,
                        Some(text) => text_to_value(oid, text.as_bytes()).unwrap(),
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn schema() -> Vec<Column> {
    std::iter::once(("id", "int4"))
        .chain(COLUMNS.iter().map(|c| (c.0, c.2)))
        .map(|(n, t)| Column { name: n.into(), type_name: t.into() })
        .collect()
}

async fn setup(client: &Client) {
    let defs: Vec<String> = COLUMNS.iter().map(|c| format!("{} {}", c.0, c.1)).collect();
    client.batch_execute(&format!("CREATE TABLE t (id int PRIMARY KEY, {})", defs.join(", "))).await.unwrap();
    // Every value of every pool appears (and NULL), in varying combinations.
    let mut inserts = String::new();
    for id in 0..ROWS {
        let vals: Vec<String> = COLUMNS
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let pool = c.4;
                let slot = (id * (2 * k + 3) + k) % (pool.len() + 1);
                pool.get(slot).map_or("NULL".to_owned(), |v| format!("({v})::{}", c.1))
            })
            .collect();
        inserts.push_str(&format!("INSERT INTO t VALUES ({id}, {});\n", vals.join(", ")));
    }
    client.batch_execute(&inserts).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_agree_with_postgres() {
    let Some(db) = testkit::test_db("predicate_diff").await else { return };
    let client = db.client().await;
    setup(&client).await;
    let rows = rows(&client).await;
    assert_eq!(rows.len(), ROWS);
    let columns = schema();

    // Fixed by default; FLASHSYNC_PREDICATE_SEED / _CASES explore further.
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let mut rng = Rng(env("FLASHSYNC_PREDICATE_SEED", 0x5eed_f11e) | 1);
    let target = env("FLASHSYNC_PREDICATE_CASES", 12_000) as usize;
    let (mut cases, mut refused, mut seen) = (0usize, 0usize, std::collections::BTreeSet::new());
    let mut mismatches = Vec::new();
    let mut tally = [0usize; 3];
    while cases < target || seen.len() < 250 {
        assert!(seen.len() < 50 * (target / 50).max(100), "the generator produces too few usable filters");
        let text = condition(&mut rng, 2);
        if !seen.insert(text.clone()) {
            continue;
        }
        let bound = match Predicate::parse(&text).and_then(|p| p.bind(&columns).map(|b| (p, b))) {
            Ok(b) => b,
            Err(e) => {
                refused += 1;
                // A refusal is always safe; note the ones Postgres accepts.
                if verdicts(&client, &[&text]).await.is_ok() && refused <= env("FLASHSYNC_PREDICATE_SHOW", 20) as usize
                {
                    eprintln!("refused (Postgres accepts it): {text}: {e}");
                }
                continue;
            }
        };
        let (pred, bound) = bound;
        let sql = pred.to_sql();
        let pg = match verdicts(&client, &[&text, &sql]).await {
            Ok(v) => v,
            Err(e) => {
                mismatches.push(format!("Postgres fails on an accepted filter {text:?} (as {sql}): {e}"));
                continue;
            }
        };
        for (row, v) in rows.iter().zip(&pg) {
            cases += 1;
            let ours = bound.eval(row);
            tally[match ours {
                Some(true) => 0,
                Some(false) => 1,
                None => 2,
            }] += 1;
            if v[0] != v[1] || v[1] != ours {
                mismatches.push(format!(
                    "{text}\n    as {sql}\n    row {row:?}\n    Postgres (text) {:?}, Postgres (rendered) {:?}, flashsync {ours:?}",
                    v[0], v[1]
                ));
            }
        }
    }
    eprintln!(
        "predicate differential: {} filters, {cases} (filter, row) cases (true/false/NULL: {tally:?}), {refused} refused",
        seen.len() - refused
    );
    assert!(cases >= 10_000);
    assert!(tally.iter().all(|&n| n > cases / 20), "verdicts too uniform to test much: {tally:?}");
    assert!(
        mismatches.is_empty(),
        "{} mismatches, the first ones:\n{}",
        mismatches.len(),
        mismatches.iter().take(15).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// The hostile filters never reach the server, and a literal with quotes and
/// backslashes means itself whatever `standard_conforming_strings` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_filters_and_quoting() {
    let Some(db) = testkit::test_db("predicate_hostile").await else { return };
    let client = db.client().await;
    for (text, needle) in [
        ("1=1; DROP TABLE t", "`;`"),
        ("id = 1 OR (SELECT 1) = 1", "subquery"),
        ("lower(name) = 'x'", "lower()"),
        ("name = 'x' OR pg_sleep(1) IS NULL", "pg_sleep()"),
        ("name = 'a' -- '\n OR TRUE", ""),
    ] {
        match Predicate::parse(text) {
            Err(e) => assert!(e.to_string().contains(needle), "{text:?}: {e}"),
            // A comment is just a comment: the rendered SQL has none.
            Ok(p) => assert_eq!(p.to_sql(), r#"(("name" = ('a' COLLATE "C")) OR TRUE)"#),
        }
    }
    assert_eq!(Predicate::parse("1=1; DROP TABLE t"), Err(PredicateError::Unsupported { construct: "`;`".into() }));

    client.batch_execute("CREATE TABLE q (id int PRIMARY KEY, s text)").await.unwrap();
    let tricky = r"it's a \ backslash, a '' pair, $fs$ and \' too";
    client.execute("INSERT INTO q VALUES (1, $1), (2, 'other')", &[&tricky]).await.unwrap();
    let filter = format!("s = '{}'", tricky.replace('\'', "''"));
    let pred = Predicate::parse(&filter).unwrap();
    let columns =
        [Column { name: "id".into(), type_name: "int4".into() }, Column { name: "s".into(), type_name: "text".into() }];
    let bound = pred.bind(&columns).unwrap();
    assert!(bound.matches(&[Value::Int(1), Value::Text(tricky.into())]));
    for setting in ["on", "off"] {
        client.batch_execute(&format!("SET standard_conforming_strings = {setting}")).await.unwrap();
        let msgs = client.simple_query(&format!("SELECT id FROM q WHERE {}", pred.to_sql())).await.unwrap();
        let ids: Vec<String> = msgs
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect();
        assert_eq!(ids, ["1"], "standard_conforming_strings = {setting}: {}", pred.to_sql());
    }
}

/// Text comparisons mean bytes on both paths even when the column's
/// collation says otherwise: the rendered SQL pins string literals to "C".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_comparisons_ignore_column_collations() {
    let Some(db) = testkit::test_db("predicate_collation").await else { return };
    let client = db.client().await;
    let made = client
        .batch_execute("CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
        .await;
    if let Err(e) = made {
        eprintln!("skipping the non-deterministic collation check: this server has no ICU ({e})");
        return;
    }
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, t text COLLATE ci, c char(4) COLLATE ci);
             INSERT INTO t VALUES (1, 'abc', 'abc'), (2, 'ABC', 'ABC'), (3, 'Abd', 'x'), (4, NULL, NULL);",
        )
        .await
        .unwrap();
    let columns = ["id", "t", "c"].map(|n| Column {
        name: n.into(),
        type_name: match n {
            "id" => "int4",
            "t" => "text",
            _ => "bpchar",
        }
        .into(),
    });
    let msgs = client.simple_query("SELECT id, t, c FROM t ORDER BY id").await.unwrap();
    let rows: Vec<Vec<Value>> = msgs
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                [23u32, 25, 1042]
                    .iter()
                    .enumerate()
                    .map(|(i, &oid)| r.get(i).map_or(Value::Null, |s| text_to_value(oid, s.as_bytes()).unwrap()))
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    for text in [
        "t = 'abc'",
        "t <> 'ABC'",
        "t IN ('abc', 'x')",
        "t NOT IN ('abc', 'ABD')",
        "t IS DISTINCT FROM 'abc'",
        "t LIKE 'ab%'",
        "t ILIKE 'AB%'",
        "c = 'abc'",
        "c IN ('ABC', 'y')",
        "c LIKE 'a%'",
    ] {
        let pred = Predicate::parse(text).unwrap();
        let bound = pred.bind(&columns).unwrap();
        let pg = verdicts(&client, &[&pred.to_sql()]).await.unwrap_or_else(|e| panic!("{text}: {e}"));
        for (row, v) in rows.iter().zip(&pg) {
            assert_eq!(bound.eval(row), v[0], "{text} as {} on {row:?}", pred.to_sql());
        }
    }
    // Without the pin the server would compare case-insensitively here.
    let plain = verdicts(&client, &["t = 'abc'"]).await.unwrap();
    assert_eq!(plain[1][0], Some(true), "the collation is not case-insensitive: the check above proves little");
}
