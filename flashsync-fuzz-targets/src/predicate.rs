//! Target `predicate`: the row-filter language of partial views.
//!
//! - Any text parses to a [`Predicate`] or a
//!   [`PredicateError`](flashsync_core::PredicateError)
//!   (which displays), never a panic.
//! - A parsed filter's SQL ([`Predicate::to_sql`]) parses again, renders to
//!   the same SQL, names the same columns, binds to the same schemas with
//!   the same outcome, and evaluates identically on every generated row: the
//!   SQL sent for the snapshot means what the stream's evaluator computes.
//! - Binding to arbitrary schemas (any type names, duplicate-free names in
//!   any order) and evaluating on arbitrary rows (any width, any value
//!   variants, texts shaped like each type's output and garbage) never
//!   panics, and [`BoundPredicate::matches`] agrees with
//!   [`BoundPredicate::eval`].
//!
//! The text comes from the raw input (seeds are plain filter strings) and
//! from a structured generator that writes mostly-valid filters, so the
//! evaluator is reached without the fuzzer having to discover SQL.

use arbitrary::{Arbitrary, Unstructured};
use flashsync_core::{BoundPredicate, Column, Predicate, Value};

/// The `predicate` target body (see the [module docs](self)).
pub fn predicate(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut u = Unstructured::new(data);
    let world = World::arbitrary(&mut u).unwrap_or_default();
    check(&text, &world);
    if let Ok(generated) = Gen::arbitrary(&mut u) {
        let mut out = String::new();
        generated.write(&mut out, 0);
        check(&out, &world);
    }
}

/// Schemas and rows to bind and evaluate on.
#[derive(Arbitrary, Debug, Default)]
struct World {
    /// Type (index into [`TYPES`]) for each of [`NAMES`], in a permutation.
    types: Vec<u8>,
    rotate: u8,
    rows: Vec<Vec<Val>>,
}

const NAMES: &[&str] = &["a", "b", "c", "n", "s", "ts", "Mixed Case", "é"];

const TYPES: &[&str] = &[
    "int2",
    "int4",
    "int8",
    "numeric",
    "float4",
    "float8",
    "bool",
    "text",
    "varchar",
    "bpchar",
    "date",
    "timestamp",
    "timestamptz",
    "uuid",
    "jsonb",
    "_int4",
    "",
];

/// Texts shaped like the output of the supported types, and some that are
/// not.
const TEXTS: &[&str] = &[
    "",
    "0",
    "-0",
    "1",
    "1.5",
    "12.340",
    "-1234567890123456789012345678901234567890.5",
    "NaN",
    "Infinity",
    "-Infinity",
    "2026-01-01",
    "0044-03-15 BC",
    "5874897-12-31",
    "2026-01-01 10:00:00.123456",
    "2026-01-01 10:00:00+00",
    "2026-01-01 10:00:00.5+05:30:15 BC",
    "infinity",
    "-infinity",
    "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "ab  ",
    "é",
    "it's",
    "a%b_c\\",
    "2026-02-30",
    "9999999999999999999999e999999",
];

#[derive(Arbitrary, Debug)]
enum Val {
    Null,
    Bool(bool),
    Int(i64),
    SmallInt(i8),
    Float(f64),
    Text(u8),
    AnyText(String),
    Bytes(Vec<u8>),
}

impl Val {
    fn value(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Int(i) => Value::Int(*i),
            Val::SmallInt(i) => Value::Int(i64::from(*i)),
            Val::Float(f) => Value::Float(*f),
            Val::Text(i) => Value::Text(TEXTS[usize::from(*i) % TEXTS.len()].to_owned()),
            Val::AnyText(s) => Value::Text(s.clone()),
            Val::Bytes(b) => Value::Bytes(b.clone()),
        }
    }
}

impl World {
    /// A schema: every name of [`NAMES`], rotated, typed from `types`.
    fn schema(&self, shift: usize) -> Vec<Column> {
        let n = NAMES.len();
        (0..n)
            .map(|i| {
                let name = NAMES[(i + usize::from(self.rotate) + shift) % n];
                let ty = self.types.get(i + shift).map_or(i % TYPES.len(), |&t| usize::from(t) % TYPES.len());
                Column { name: name.to_owned(), type_name: TYPES[ty].to_owned() }
            })
            .collect()
    }

    fn rows(&self) -> impl Iterator<Item = Vec<Value>> + '_ {
        self.rows.iter().take(32).map(|r| r.iter().take(16).map(Val::value).collect())
    }
}

fn check(text: &str, world: &World) {
    let p = match Predicate::parse(text) {
        Ok(p) => p,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let sql = p.to_sql();
    let q = match Predicate::parse(&sql) {
        Ok(q) => q,
        Err(e) => panic!("{text:?} renders as {sql:?}, which does not parse: {e}"),
    };
    assert_eq!(q.to_sql(), sql, "{text:?}: rendering is not a fixpoint");
    assert_eq!(q.columns(), p.columns(), "{text:?} and its SQL {sql:?} read different columns");
    for shift in 0..3 {
        let schema = world.schema(shift);
        match (p.bind(&schema), q.bind(&schema)) {
            (Ok(bp), Ok(bq)) => {
                check_columns(&bp, &schema);
                for row in world.rows() {
                    let (vp, vq) = (bp.eval(&row), bq.eval(&row));
                    assert_eq!(vp, vq, "{text:?} and its SQL {sql:?} disagree on {row:?}");
                    assert_eq!(bp.matches(&row), vp == Some(true));
                }
                // Rows of every width, with well-shaped values.
                for width in 0..=schema.len() + 1 {
                    let row: Vec<Value> = (0..width).map(|i| typed_value(&schema, i)).collect();
                    assert_eq!(bp.eval(&row), bq.eval(&row), "{text:?} on {row:?}");
                }
            }
            (Err(ep), Err(eq)) => {
                assert_eq!(ep.to_string(), eq.to_string(), "{text:?} and its SQL {sql:?} fail differently")
            }
            (a, b) => panic!("{text:?} binds as {a:?}, its SQL {sql:?} as {b:?}"),
        }
    }
}

fn check_columns(b: &BoundPredicate, schema: &[Column]) {
    let cols = b.columns();
    assert!(cols.windows(2).all(|w| w[0] < w[1]), "columns not ascending: {cols:?}");
    assert!(cols.iter().all(|&i| i < schema.len()));
}

/// A plausible value for column `i` of `schema`.
fn typed_value(schema: &[Column], i: usize) -> Value {
    match schema.get(i).map(|c| c.type_name.as_str()) {
        Some("int2" | "int4" | "int8") => Value::Int(i as i64 - 1),
        Some("float4" | "float8") => Value::Float(if i.is_multiple_of(2) { f64::NAN } else { -0.0 }),
        Some("bool") => Value::Bool(i.is_multiple_of(2)),
        Some("numeric") => Value::Text("1.50".into()),
        Some("date") => Value::Text("2026-01-01".into()),
        Some("timestamp") => Value::Text("2026-01-01 00:00:00".into()),
        Some("timestamptz") => Value::Text("2026-01-01 00:00:00+00".into()),
        Some("uuid") => Value::Text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
        Some(_) => Value::Text("ab ".into()),
        None => Value::Null,
    }
}

/// A generated filter, written as SQL text.
#[derive(Arbitrary, Debug)]
enum Gen {
    Cmp(u8, u8, Lit),
    ColCmp(u8, u8, u8),
    In(u8, bool, Vec<Lit>),
    Between(u8, bool, Lit, Lit),
    Like(u8, u8, u8, bool),
    IsNull(u8, bool),
    Distinct(u8, bool, Lit),
    Bare(u8),
    Test(Box<Gen>, u8),
    Not(Box<Gen>),
    And(Box<Gen>, Box<Gen>),
    Or(Box<Gen>, Box<Gen>),
}

#[derive(Arbitrary, Debug)]
enum Lit {
    Int(i64),
    Small(i8),
    Decimal(i32, u8),
    Pool(u8),
    Str(String),
    Null,
}

const LITERALS: &[&str] = &[
    "1.5",
    "-1.5",
    "1e3",
    "'NaN'",
    "'NaN'::numeric",
    "'Infinity'::float8",
    "'1.1'::float4",
    "1.1",
    "- -2",
    "+3",
    "(-2147483648)::int4",
    "-(1::int8)",
    "99999999999999999999999",
    "TRUE",
    "'t'",
    "'2026-01-01'",
    "date '2026-01-01'",
    "timestamptz '2026-01-01 12:00+02'",
    "'2026-01-01 10:00:00.5'::timestamp",
    "'infinity'",
    "'0044-03-15 BC'::date",
    "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'",
    "'ab'::text",
    "$$a\\b$$",
    "'it''s'",
    "NULL::int4",
];

const PATTERNS: &[&str] = &["'a%'", "'%'", "'_b'", "'a\\%'", "'A!%' ESCAPE '!'", "'x' ESCAPE ''", "'é%'"];

impl Lit {
    fn write(&self, out: &mut String) {
        match self {
            Lit::Int(i) => out.push_str(&i.to_string()),
            Lit::Small(i) => out.push_str(&i.to_string()),
            Lit::Decimal(m, s) => {
                let s = usize::from(*s % 45);
                let digits = m.unsigned_abs().to_string();
                let sign = if *m < 0 { "-" } else { "" };
                out.push_str(&format!("{sign}0.{}{digits}", "0".repeat(s)));
            }
            Lit::Pool(i) => out.push_str(LITERALS[usize::from(*i) % LITERALS.len()]),
            Lit::Str(s) => {
                out.push('\'');
                out.push_str(&s.replace('\'', "''"));
                out.push('\'');
            }
            Lit::Null => out.push_str("NULL"),
        }
    }
}

fn name(i: u8) -> String {
    let n = NAMES[usize::from(i) % NAMES.len()];
    if n.chars().all(|c| c.is_ascii_lowercase()) {
        n.to_owned()
    } else {
        format!("\"{n}\"")
    }
}

const OPS: &[&str] = &["=", "<>", "!=", "<", "<=", ">", ">="];

impl Gen {
    fn write(&self, out: &mut String, depth: usize) {
        if depth > 12 {
            out.push_str("TRUE");
            return;
        }
        let op = |o: &u8| OPS[usize::from(*o) % OPS.len()];
        let not = |b: &bool| if *b { "NOT " } else { "" };
        match self {
            Gen::Cmp(c, o, l) => {
                out.push_str(&format!("{} {} ", name(*c), op(o)));
                l.write(out);
            }
            Gen::ColCmp(a, o, b) => out.push_str(&format!("{} {} {}", name(*a), op(o), name(*b))),
            Gen::In(c, n, items) => {
                out.push_str(&format!("{} {}IN (", name(*c), not(n)));
                for (i, l) in items.iter().take(6).enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    l.write(out);
                }
                if items.is_empty() {
                    out.push_str("NULL");
                }
                out.push(')');
            }
            Gen::Between(c, n, lo, hi) => {
                out.push_str(&format!("{} {}BETWEEN ", name(*c), not(n)));
                lo.write(out);
                out.push_str(" AND ");
                hi.write(out);
            }
            Gen::Like(c, k, p, n) => {
                let kind = if k % 2 == 0 { "LIKE" } else { "ILIKE" };
                let pat = PATTERNS[usize::from(*p) % PATTERNS.len()];
                out.push_str(&format!("{} {}{kind} {pat}", name(*c), not(n)));
            }
            Gen::IsNull(c, n) => out.push_str(&format!("{} IS {}NULL", name(*c), not(n))),
            Gen::Distinct(c, n, l) => {
                out.push_str(&format!("{} IS {}DISTINCT FROM ", name(*c), not(n)));
                l.write(out);
            }
            Gen::Bare(c) => out.push_str(&name(*c)),
            Gen::Test(g, t) => {
                out.push('(');
                g.write(out, depth + 1);
                let test = ["TRUE", "NOT TRUE", "FALSE", "NOT FALSE", "UNKNOWN", "NOT UNKNOWN", "NULL", "NOT NULL"];
                out.push_str(&format!(") IS {}", test[usize::from(*t) % test.len()]));
            }
            Gen::Not(g) => {
                out.push_str("NOT (");
                g.write(out, depth + 1);
                out.push(')');
            }
            Gen::And(a, b) | Gen::Or(a, b) => {
                out.push('(');
                a.write(out, depth + 1);
                out.push_str(if matches!(self, Gen::And(..)) { ") AND (" } else { ") OR (" });
                b.write(out, depth + 1);
                out.push(')');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed corpus and every crash found so far (`tests/corpus.rs`
    /// replays the targets it lists; this one replays its own directories).
    #[test]
    fn seed_corpus_and_regressions_pass() {
        let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut seeds = 0;
        for dir in ["corpus/predicate", "regressions/predicate"] {
            let Ok(entries) = std::fs::read_dir(fuzz.join(dir)) else { continue };
            for entry in entries {
                let path = entry.expect("a corpus entry").path();
                let data = std::fs::read(&path).expect("a corpus file");
                if std::panic::catch_unwind(|| predicate(&data)).is_err() {
                    panic!("{} fails", path.display());
                }
                seeds += usize::from(dir.starts_with("corpus"));
            }
        }
        assert!(seeds >= 5, "only {seeds} seeds");
    }

    #[test]
    fn structured_inputs_reach_the_evaluator() {
        // A fixed pseudo-random stream of inputs: most generated filters
        // must parse and bind, or the target exercises little.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let (mut parsed, mut total) = (0, 0);
        for _ in 0..300 {
            let bytes: Vec<u8> = (0..256)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            predicate(&bytes);
            let mut u = Unstructured::new(&bytes);
            let _ = World::arbitrary(&mut u);
            if let Ok(g) = Gen::arbitrary(&mut u) {
                let mut text = String::new();
                g.write(&mut text, 0);
                total += 1;
                parsed += usize::from(Predicate::parse(&text).is_ok());
            }
        }
        assert!(parsed * 2 > total, "{parsed} of {total} generated filters parse");
    }
}
